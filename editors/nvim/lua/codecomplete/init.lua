-- codecomplete.nvim: completions and ghost text from codecomplete-lsp, a model you trained.
--
--   require('codecomplete').setup({ checkpoint = '~/models/small' })
--
-- Registers the server with vim.lsp.config/vim.lsp.enable (Neovim 0.11+; vim.lsp.start on a
-- FileType autocmd before that), turns on the completion menu (vim.lsp.completion, 0.11+) and
-- ghost text (vim.lsp.inline_completion, 0.12+) in the buffers it attaches to, and swaps the
-- checkpoint of running servers without a restart. See :h codecomplete.
local config = require('codecomplete.config')

local M = {}
local NAME = 'codecomplete'
local STATUS = 'codecomplete.status'

--- The resolved options of the last setup() call; nil before it.
M.opts = nil

local has_011 = vim.fn.has('nvim-0.11') == 1
local uv = vim.uv or vim.loop

--- client:method(...) on Neovim 0.11+, client.method(...) on 0.10.
function M.call(client, method, ...)
  if has_011 then
    return client[method](client, ...)
  end
  return client[method](...)
end
local call = M.call

local function notify(msg, level)
  vim.notify(msg, level or vim.log.levels.INFO, { title = 'codecomplete' })
end

--- Running codecomplete clients; the one attached to bufnr (default: the current buffer) first.
function M.clients(bufnr)
  local here = vim.lsp.get_clients({ name = NAME, bufnr = bufnr or vim.api.nvim_get_current_buf() })
  for _, client in ipairs(vim.lsp.get_clients({ name = NAME })) do
    if client.id ~= (here[1] and here[1].id) then
      here[#here + 1] = client
    end
  end
  return here
end

local function on_attach(client, bufnr)
  local opts = M.opts or config.defaults
  if vim.lsp.completion then -- 0.11+: <C-y> runs the item's command, which feeds the acceptance log
    vim.lsp.completion.enable(true, client.id, bufnr, { autotrigger = opts.autotrigger })
  end -- before 0.11 the omnifunc (<C-x><C-o>) that Neovim sets on attach gives the items
  if not (vim.lsp.inline_completion and opts.inline) then
    return
  end
  vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  local keys = opts.keymaps or {}
  if keys.accept then
    vim.keymap.set('i', keys.accept, function()
      if not vim.lsp.inline_completion.get() then
        return keys.accept -- nothing shown: the key itself (a tab, for <Tab>)
      end
    end, { expr = true, buffer = bufnr, desc = 'codecomplete: accept the ghost text' })
  end
  for key, count in pairs({ next = 1, prev = -1 }) do
    if keys[key] then
      vim.keymap.set('i', keys[key], function() vim.lsp.inline_completion.select({ count = count }) end,
        { buffer = bufnr, desc = 'codecomplete: ' .. key .. ' suggestion' })
    end
  end
end

-- The client configuration follows M.opts: re-assigned on 0.11+, read at start before it.
local function update_config()
  if vim.lsp.config and vim.lsp.enable then
    vim.lsp.config[NAME] = config.lsp_config(M.opts) -- assigned, not merged: setup() twice is setup() once
  end
end

local function start_legacy(bufnr) -- Neovim 0.10
  local cfg = config.lsp_config(M.opts)
  local root = vim.fs.root(bufnr, cfg.root_markers) or vim.fn.getcwd()
  vim.lsp.start({ name = NAME, cmd = cfg.cmd, root_dir = root, settings = cfg.settings }, { bufnr = bufnr })
end

local function register(group)
  if vim.lsp.config and vim.lsp.enable then
    return vim.lsp.enable(NAME)
  end
  vim.api.nvim_create_autocmd('FileType', {
    group = group, pattern = M.opts.filetypes, callback = function(ev) start_legacy(ev.buf) end,
  })
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do -- buffers opened before setup()
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(M.opts.filetypes, vim.bo[bufnr].filetype) then
      start_legacy(bufnr)
    end
  end
end

--- Send the settings of opts to the running servers (workspace/didChangeConfiguration); a new
--- checkpoint loads in the background while the old one keeps serving.
local function push(opts)
  local settings = config.lsp_config(opts).settings
  local pushed = 0
  for _, client in ipairs(M.clients()) do
    if not vim.deep_equal(client.settings, settings) then
      client.settings = settings -- also what the server's workspace/configuration pulls get
      call(client, 'notify', 'workspace/didChangeConfiguration', { settings = settings })
      pushed = pushed + 1
    end
  end
  return pushed
end

--- Idempotent: the same opts give the same state however often it runs; new settings reach
--- running servers at once.
function M.setup(opts)
  local resolved = config.resolve(opts)
  M.opts = resolved
  local group = vim.api.nvim_create_augroup('codecomplete', { clear = true })
  vim.api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == NAME then
        on_attach(client, ev.buf)
      end
    end,
  })
  update_config()
  register(group)
  push(resolved)
  return M
end

--- The server's status (codecomplete.status), waiting at most timeout_ms. nil, why on failure.
function M.status(bufnr, timeout_ms)
  local client = M.clients(bufnr)[1]
  if not client then
    return nil, 'no codecomplete server is running: open a Python file after setup()'
  end
  local r = call(client, 'request_sync', 'workspace/executeCommand', { command = STATUS, arguments = {} },
    timeout_ms or 5000, bufnr or 0)
  if not r then
    return nil, 'the server did not answer codecomplete.status in time'
  end
  return r.result, r.err and r.err.message
end

--- One workspace folder's repository context, as :CodecompleteStatus and :checkhealth say it.
function M.format_index(f)
  local index = type(f.index) == 'table'
      and ('%d tokens, built in %.1f s'):format(f.index.tokens, f.index.build_s) or 'not built yet'
  return ('context %s: %d files, %.1f MB; %s'):format(f.folder, f.files, f.mb, index)
end

--- What :CodecompleteStatus prints.
function M.format_status(s)
  local lines = { ('codecomplete-lsp %s: %s'):format(s.version, s.ready and 'ready' or 'no model loaded') }
  local m = s.model
  if type(m) == 'table' then
    lines[#lines + 1] = ('model   %s on %s, %.1fM parameters, loaded in %.0f ms'):format(
      m.checkpoint, m.device, m.params / 1e6, m.loadMs)
  end
  if type(s.loading) == 'string' then lines[#lines + 1] = 'loading ' .. s.loading end
  if type(s.error) == 'string' then lines[#lines + 1] = 'error   ' .. s.error end
  local last = type(s.latencies) == 'table' and s.latencies[#s.latencies]
  if last then
    lines[#lines + 1] = ('latency %.0f ms (%s, %d items)'):format(last.serverMs, last.kind, last.items)
  end
  for _, f in ipairs(type(s.workspace) == 'table' and s.workspace or {}) do
    lines[#lines + 1] = M.format_index(f)
  end
  local keys = vim.tbl_keys(s.settings or {})
  table.sort(keys)
  local shown = vim.tbl_map(function(k) return k .. '=' .. vim.json.encode(s.settings[k]) end, keys)
  lines[#lines + 1] = 'settings ' .. table.concat(shown, ' ')
  return lines
end

--- :CodecompleteStatus
function M.show_status()
  local client = M.clients()[1]
  if not client then
    return notify('no codecomplete server is running: open a Python file after setup()', vim.log.levels.WARN)
  end
  call(client, 'request', 'workspace/executeCommand', { command = STATUS, arguments = {} }, function(err, s)
    if err or type(s) ~= 'table' then
      return notify('codecomplete.status failed: ' .. (err and err.message or 'no answer'), vim.log.levels.ERROR)
    end
    notify(table.concat(M.format_status(s), '\n'))
  end)
end

-- Say when the new checkpoint serves; a failure the server reports itself (window/showMessage).
local function watch_load(client, path, deadline)
  call(client, 'request', 'workspace/executeCommand', { command = STATUS, arguments = {} }, function(_, s)
    local m = type(s) == 'table' and s.model
    if type(m) == 'table' and m.checkpoint == path and type(s.loading) ~= 'string' then
      return notify(('serving %s on %s'):format(path, m.device))
    end
    local failed = type(s) == 'table' and type(s.error) == 'string' and s.error:find(path, 1, true)
    if not failed and uv.now() < deadline then
      vim.defer_fn(function() watch_load(client, path, deadline) end, 250)
    end
  end)
end

--- :CodecompleteCheckpoint {path}: serve another checkpoint folder without a restart.
function M.set_checkpoint(path)
  if not M.opts then
    return notify("call require('codecomplete').setup() first", vim.log.levels.ERROR)
  end
  path = vim.fs.normalize(vim.fn.fnamemodify(vim.fs.normalize(path), ':p'))
  M.opts.checkpoint = path
  M.opts.settings.checkpoint = nil
  update_config()
  if push(M.opts) == 0 then
    return notify(('checkpoint set to %s; it loads when a %s buffer opens'):format(
      path, table.concat(M.opts.filetypes, '/')))
  end
  notify('loading ' .. path)
  for _, client in ipairs(M.clients()) do
    watch_load(client, path, uv.now() + 180000)
  end
end

return M
