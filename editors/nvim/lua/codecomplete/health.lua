-- :checkhealth codecomplete: Neovim version, the server command, the checkpoint folder, and what
-- the server itself says (codecomplete.status): the checkpoint loaded, on which device.
local config = require('codecomplete.config')

local M = {}
local health = vim.health
local uv = vim.uv or vim.loop
local WAIT_MS = 90000 -- a cold start imports torch and loads the model

local FILES = { 'config.json', 'model.safetensors', 'tokenizer.json' }
local INSTALL = 'install the server: `pipx install /path/to/codecomplete` (or `uv tool install`) puts '
  .. 'codecomplete-lsp on $PATH; or `pip install /path/to/codecomplete` into a virtual environment '
  .. "and pass setup({ python = '/path/to/venv/bin/python' })"

local function check_neovim()
  local v = tostring(vim.version())
  if vim.lsp.inline_completion then
    health.ok(('Neovim %s: completion menu and ghost text'):format(v))
  elseif vim.fn.has('nvim-0.10') == 1 then
    health.warn(('Neovim %s: completion menu only'):format(v), 'ghost text needs Neovim 0.12 (vim.lsp.inline_completion)')
  else
    health.error(('Neovim %s is too old'):format(v), 'update to Neovim 0.11 or newer (0.12 for ghost text)')
  end
end

--- The server answers `--version` without loading a model: found, importable, which version.
local function check_server(cmd)
  if vim.fn.executable(cmd[1]) ~= 1 then
    health.error(('server command not found: %s'):format(cmd[1]), { INSTALL, 'or set setup({ cmd = { ... } })' })
    return false
  end
  local ok, done = pcall(function()
    return vim.system(vim.list_extend(vim.deepcopy(cmd), { '--version' }), { text = true }):wait(30000)
  end)
  if not ok or done.code ~= 0 then
    local err = ok and vim.trim((done.stderr or '') .. (done.stdout or '')) or tostring(done)
    local last = err:match('([^\n]*)$')
    local missing = err:match("No module named '?([%w_.]+)")
    health.error(('%s does not start: %s'):format(table.concat(cmd, ' '), last ~= '' and last or 'no output'),
      missing and ('the Python it runs lacks the module %s: %s'):format(missing, INSTALL) or INSTALL)
    return false
  end
  health.ok(('%s (%s)'):format(vim.trim(done.stdout), vim.fn.exepath(cmd[1])))
  return true
end

local function check_checkpoint(path)
  if type(path) ~= 'string' or path == '' then
    return health.info('checkpoint not set: the server uses $CODECOMPLETE_CHECKPOINT, else models/default')
  end
  local fix = { ':CodecompleteCheckpoint {folder} with a folder that codecomplete-train wrote',
    'or train one: `codecomplete-train quickstart`' }
  if vim.fn.isdirectory(path) == 0 then
    return health.error(('checkpoint folder %s does not exist (relative paths start at the project root)'):format(path), fix)
  end
  local missing = vim.tbl_filter(function(f) return vim.fn.filereadable(path .. '/' .. f) == 0 end, FILES)
  if #missing > 0 then
    return health.error(('checkpoint folder %s lacks %s'):format(path, table.concat(missing, ', ')), fix)
  end
  health.ok('checkpoint folder ' .. path)
end

--- A running client, or a temporary one that is not attached to any buffer.
local function server_client(cfg)
  local running = require('codecomplete').clients()[1]
  if running then
    return running, false
  end
  local spec = { name = cfg.name, cmd = cfg.cmd, root_dir = vim.fn.getcwd(), settings = cfg.settings }
  local id = vim.fn.has('nvim-0.11') == 1 and vim.lsp.start(spec, { attach = false }) or vim.lsp.start_client(spec)
  return id and vim.lsp.get_client_by_id(id), true
end

local function check_model(plugin, cfg)
  local client, temporary = server_client(cfg)
  if not client then
    return health.error('could not start ' .. table.concat(cfg.cmd, ' '), 'see :lua vim.cmd.edit(vim.lsp.get_log_path())')
  end
  local status, why
  local deadline = uv.now() + WAIT_MS
  repeat -- loaded, failed, or out of time
    status, why = plugin.status(nil, 5000)
    local done = type(status) == 'table'
      and ((status.ready and type(status.loading) ~= 'string') or type(status.error) == 'string')
    if not done then
      vim.wait(200)
    end
  until done or uv.now() > deadline or not vim.lsp.get_client_by_id(client.id)
  if temporary then
    plugin.call(client, 'stop')
  end
  if type(status) ~= 'table' then
    return health.error('the server does not answer codecomplete.status: ' .. tostring(why),
      'see the log: :lua vim.cmd.edit(vim.lsp.get_log_path())')
  end
  if type(status.error) == 'string' then
    health.error(status.error, { ':CodecompleteCheckpoint {folder} to serve another checkpoint', INSTALL })
  end
  local m = status.model
  if type(m) ~= 'table' then
    return health.warn(('no model loaded after %d s'):format(WAIT_MS / 1000))
  end
  health.ok(('checkpoint loads: %s (%.1fM parameters, %.0f ms)'):format(m.checkpoint, m.params / 1e6, m.loadMs))
  health.ok(('device: %s (setting: %s)'):format(m.device, status.settings and status.settings.device or '?'))
  if status.settings and status.settings.repoContext == false then
    return health.info('repository context is off (repo_context = false)')
  end
  local folders = type(status.workspace) == 'table' and status.workspace or {}
  if #folders == 0 then
    health.info('repository context: no workspace folder (open a file inside a project with a root marker)')
  end
  for _, f in ipairs(folders) do
    health.ok(plugin.format_index(f))
  end
end

function M.check()
  local plugin = require('codecomplete')
  health.start('codecomplete')
  check_neovim()
  local opts = plugin.opts
  if not opts then
    health.warn("setup() has not been called; checking the defaults", "require('codecomplete').setup({ checkpoint = ... })")
    opts = config.resolve({})
  end
  local cfg = config.lsp_config(opts)
  local found = check_server(cfg.cmd)
  check_checkpoint(cfg.settings.codecomplete.checkpoint)
  if found then
    check_model(plugin, cfg)
  end
end

return M
