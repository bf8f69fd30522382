-- Options of require('codecomplete').setup(): what the plugin itself uses, and the server's
-- settings. Any key that is not the plugin's own is a server setting (see :h codecomplete-settings),
-- written snake_case here and sent camelCase on the wire; the server owns their defaults and warns
-- about unknown keys and wrong types.
local M = {}

--- The plugin's own options. Everything else in setup() goes to the server.
M.defaults = {
  cmd = nil, -- the server command; default { 'codecomplete-lsp' }, or { python, '-m', 'codecomplete.lsp' }
  python = nil, -- a Python that has the codecomplete package installed
  filetypes = { 'python' },
  root_markers = { '.git', 'pyproject.toml', 'setup.py' },
  inline = true, -- ghost text (Neovim 0.12+)
  autotrigger = false, -- open the completion menu on the server's trigger characters
  keymaps = {
    accept = '<Tab>', -- accept the ghost text; falls back to a plain <Tab> when none is shown
    next = '<M-]>', -- next / previous ghost-text suggestion
    prev = '<M-[>',
  },
  settings = {}, -- server settings in camelCase, e.g. { numSuggestions = 3 }
  -- :CodecompleteAdapt: minutes of fine-tuning, and eval_cases, the line cases of the comparison with
  -- the base model that follows (default: the CLI's, 100)
  adapt = { minutes = 10 },
}
local PLUGIN_KEYS = { cmd = true, python = true }
for key in pairs(M.defaults) do
  PLUGIN_KEYS[key] = true
end

--- 'max_new_tokens' -> 'maxNewTokens'; camelCase passes through unchanged.
function M.camel(key)
  return (key:gsub('_(%w)', string.upper))
end

--- The server's `codecomplete` section from the options (plugin keys left out); a top-level key
--- wins over the same key in opts.settings.
function M.server_settings(opts)
  local out = {}
  for key, value in pairs(opts.settings or {}) do
    out[M.camel(key)] = value
  end
  for key, value in pairs(opts) do
    if not PLUGIN_KEYS[key] then
      out[M.camel(key)] = value
    end
  end
  if type(out.checkpoint) == 'string' and out.checkpoint ~= '' then
    out.checkpoint = vim.fs.normalize(out.checkpoint) -- ~ and $VARS; a relative path is the server's to resolve
  end
  return out
end

--- The command that starts the server.
function M.server_cmd(opts)
  if opts.cmd then
    return type(opts.cmd) == 'string' and { opts.cmd } or opts.cmd
  end
  if opts.python then
    return { vim.fs.normalize(opts.python), '-m', 'codecomplete.lsp' }
  end
  return { 'codecomplete-lsp' }
end

--- Defaults with opts laid over them: setup() called twice with the same opts gives the same result.
function M.resolve(opts)
  assert(opts == nil or type(opts) == 'table', 'codecomplete: setup() takes a table of options')
  local resolved = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  if opts and opts.keymaps == false then
    resolved.keymaps = {}
  end
  for key, kinds in pairs({ filetypes = 'table', root_markers = 'table', cmd = 'table|string|nil', python = 'string|nil' }) do
    local kind = type(resolved[key])
    assert(kinds:find(kind, 1, true), ('codecomplete: option %s should be a %s, not a %s'):format(key, kinds, kind))
  end
  return resolved
end

--- The vim.lsp client configuration for these options.
function M.lsp_config(opts)
  return {
    name = 'codecomplete',
    cmd = M.server_cmd(opts),
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    settings = { codecomplete = M.server_settings(opts) },
  }
end

return M
