-- Headless Neovim drives the codecomplete plugin as a user would and writes down what it saw as
-- JSON (E2E_OUT) for tests/test_nvim_plugin.py to check; this script only fails on errors and
-- timeouts.
--
--   E2E_PLUGIN=editors/nvim E2E_SCENARIO=main E2E_SERVER_CMD='["codecomplete-lsp"]' \
--   E2E_CHECKPOINT=dir E2E_CHECKPOINT_B=dir E2E_OUT=out.json \
--   timeout 170 nvim --headless -u NONE -i NONE -n -c 'luafile editors/nvim/tests/plugin_e2e.lua' </dev/null
--
-- Scenarios: main (setup, menu, ghost text, :CodecompleteCheckpoint, :CodecompleteStatus,
-- :checkhealth), legacy (vim.lsp.start, as before Neovim 0.11), broken (:checkhealth with a missing
-- server and a Python without the package), adapt (:CodecompleteAdapt fails with its cause, is
-- cancelled, resumes and serves; E2E_PROJECT: Python files to put beside the sample). Not `nvim -l`:
-- it exits when Insert mode waits for a key.
-- Exit code: 0 done, 1 an error or a step timed out, 3 the watchdog fired.

local uv = vim.uv
local HERE = debug.getinfo(1, 'S').source:sub(2):match('(.*)/')
local STEP_MS = tonumber(os.getenv('E2E_TIMEOUT_MS') or '') or 30000
local H = dofile(HERE .. '/../../../tests/nvim/harness.lua')('plugin-e2e', STEP_MS)
local ms, log, wait_for = H.ms, H.log, H.wait_for
local SCENARIO = os.getenv('E2E_SCENARIO') or 'main'
local report = { nvim = tostring(vim.version()), scenario = SCENARIO, timings_ms = {}, messages = {} }
local watchdog = H.watchdog(5)

vim.notify = function(msg, level) -- what the plugin tells the user
  report.messages[#report.messages + 1] = { msg = msg, level = level }
  log('notify[%s] %s', tostring(level), msg)
end

local function typing(keys, probe)
  return assert(H.typing(keys, probe), 'timed out typing ' .. keys)
end

local function health_lines()
  vim.cmd('checkhealth codecomplete')
  local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  vim.cmd('bwipeout!')
  return lines
end

local plugin -- require('codecomplete'), once the runtimepath has it
local FOR_ROW, TYPED = 8, '    for i in ra' -- 0-based row of the line that ends in "ra"

local function open_sample()
  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir .. '/.git', 'p') -- the root marker
  vim.fn.writefile({
    '"""Helpers for a synthetic module."""', 'import json', 'import os', '', '',
    'def parse_line_7(path, items=None):', '    """Return the path for items."""',
    '    items = items or {}', TYPED,
  }, dir .. '/sample.py')
  vim.cmd.edit(vim.fn.fnameescape(dir .. '/sample.py'))
  vim.bo.filetype = 'python' -- -u NONE has no filetype detection; this attaches the client
  local buf = vim.api.nvim_get_current_buf()
  local client = wait_for('the client to initialize', function()
    local c = plugin.clients(buf)[1]
    return c and c.initialized and c
  end)
  report.status = wait_for('the model to load', function()
    local s = plugin.status(buf)
    return type(s) == 'table' and s.ready and type(s.loading) ~= 'string' and s
  end)
  return buf, client
end

local function request(client, buf, method, kind)
  local params = { textDocument = { uri = vim.uri_from_bufnr(buf) }, position = { line = FOR_ROW, character = #TYPED },
                   context = { triggerKind = kind or 1 } }
  local r = assert(client:request_sync(method, params, STEP_MS, buf), method .. ' timed out')
  assert(not r.err, vim.inspect(r.err))
  return r.result
end

local function reset_line(buf)
  vim.api.nvim_buf_set_lines(buf, FOR_ROW, -1, false, { TYPED })
  vim.api.nvim_win_set_cursor(0, { FOR_ROW + 1, 0 })
end

local function main_scenario(opts)
  plugin.setup(opts)
  plugin.setup(opts) -- twice: the same state as once
  report.lspattach_autocmds = #vim.api.nvim_get_autocmds({ group = 'codecomplete', event = 'LspAttach' })
  local t = uv.hrtime()
  local buf, client = open_sample()
  report.timings_ms.start_to_ready = ms(t)
  report.clients = #plugin.clients(buf)
  report.inline_enabled = vim.lsp.inline_completion.is_enabled({ bufnr = buf })
  report.tab_mapping = vim.fn.maparg('<Tab>', 'i', false, true).desc

  -- The completion menu: <C-x><C-o>, then <C-y> takes the first (best) item.
  report.completion = request(client, buf, 'textDocument/completion')
  vim.o.completeopt = 'menu,menuone,noinsert'
  reset_line(buf)
  local stage = 0
  t = uv.hrtime()
  report.popup_accepted_line = typing('A<C-x><C-o>', function()
    if stage == 0 then
      local info = vim.fn.complete_info({ 'items', 'pum_visible', 'selected' })
      if #info.items == 0 then return false end
      report.timings_ms.popup = ms(t)
      report.popup = { pum_visible = info.pum_visible, selected = info.selected,
                       items = vim.tbl_map(function(i) return { abbr = i.abbr, menu = i.menu } end, info.items) }
      stage = 1
      vim.api.nvim_feedkeys(vim.keycode('<C-y>'), 'n', false)
      return false
    end
    return vim.fn.pumvisible() == 0 and vim.api.nvim_get_current_line()
  end)

  -- Ghost text: entering Insert mode asks (automatic, 200 ms debounce); <Tab> (the plugin's map) takes it.
  reset_line(buf)
  report.inline_automatic = request(client, buf, 'textDocument/inlineCompletion', 2)
  local ns = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')
  stage, t = 0, uv.hrtime()
  report.ghost_accepted_lines = typing('A', function()
    if stage == 0 then
      local marks = vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })
      if #marks == 0 then return false end
      report.timings_ms.ghost = ms(t)
      local d = marks[1][4]
      local function text(chunks) return table.concat(vim.tbl_map(function(c) return c[1] end, chunks)) end
      report.ghost = { row = marks[1][2], col = marks[1][3], virt_text = text(d.virt_text or {}),
                       virt_lines = vim.tbl_map(text, d.virt_lines or {}) }
      stage = 1
      vim.api.nvim_feedkeys(vim.keycode('<Tab>'), 'm', false) -- remapped: the plugin's <Tab>
      return false
    end
    local lines = vim.api.nvim_buf_get_lines(buf, FOR_ROW, -1, false)
    return lines[1] ~= TYPED and lines
  end)

  -- Hot swap: the other checkpoint serves, the same client, no restart.
  reset_line(buf)
  local b = assert(os.getenv('E2E_CHECKPOINT_B'))
  t = uv.hrtime()
  vim.cmd.CodecompleteCheckpoint(vim.fn.fnameescape(b))
  report.status_after_swap = wait_for('the new checkpoint', function()
    local s = plugin.status(buf)
    return type(s) == 'table' and type(s.model) == 'table' and s.model.checkpoint == b and type(s.loading) ~= 'string' and s
  end)
  wait_for('the plugin to say it serves the new checkpoint', function()
    return vim.iter(report.messages):any(function(m) return m.msg:find('serving ' .. b, 1, true) end)
  end)
  report.timings_ms.swap = ms(t)
  report.completion_after_swap = request(client, buf, 'textDocument/completion')
  report.client_after_swap = plugin.clients(buf)[1].id == client.id

  -- setup() again with another option: the running server gets it, still one client.
  plugin.setup(vim.tbl_extend('force', opts, { checkpoint = b, num_suggestions = 1 }))
  report.status_after_setup = wait_for('the new settings', function()
    local s = plugin.status(buf)
    return type(s) == 'table' and s.settings.numSuggestions == 1 and s
  end)
  report.clients_after_setup = #vim.lsp.get_clients({ name = 'codecomplete' })

  local before = #report.messages
  vim.cmd.CodecompleteStatus()
  report.status_message = wait_for(':CodecompleteStatus', function()
    return #report.messages > before and report.messages[#report.messages].msg
  end)
  t = uv.hrtime()
  report.health = health_lines()
  report.timings_ms.health = ms(t)
end

local function legacy_scenario(opts)
  vim.lsp.config, vim.lsp.enable = nil, nil -- as Neovim 0.10 has it: the plugin falls back to vim.lsp.start
  plugin.setup(opts)
  local buf, client = open_sample()
  report.clients = #plugin.clients(buf)
  report.completion = request(client, buf, 'textDocument/completion')
end

local function broken_scenario(opts)
  plugin.setup(vim.tbl_extend('force', opts, { cmd = { '/nonexistent/codecomplete-lsp' }, checkpoint = '/nonexistent/ckpt' }))
  report.health_missing = health_lines()
  opts.cmd, opts.python = nil, assert(os.getenv('E2E_BARE_PYTHON'))
  plugin.setup(opts)
  report.health_bare_python = health_lines()
  report.clients = #vim.lsp.get_clients()
end

--- The first message since the n-th that holds text, or nil.
local function message_since(n, text)
  for i = n + 1, #report.messages do
    if report.messages[i].msg:find(text, 1, true) then return report.messages[i].msg end
  end
end

local function adapt_scenario(opts)
  plugin.setup(vim.tbl_extend('force', opts, { adapt = { minutes = 0.05, eval_cases = 2 } }))
  local buf, client = open_sample()
  local root, n = client.root_dir, #report.messages
  vim.cmd.CodecompleteAdapt() -- the sample alone is too small for collect's filters
  report.adapt_failure = wait_for('the failure', function() return message_since(n, 'failed') end)
  for _, file in ipairs(vim.fn.glob(assert(os.getenv('E2E_PROJECT')) .. '/*.py', false, true)) do
    vim.fn.writefile(vim.fn.readfile(file), root .. '/' .. vim.fs.basename(file))
  end
  n = #report.messages
  vim.cmd.CodecompleteAdapt('5') -- five minutes: stopped once fine-tuning runs
  wait_for('fine-tuning to begin', function() return message_since(n, ': fine-tuning') end)
  vim.cmd.CodecompleteAdapt('cancel')
  report.adapt_stopped = wait_for('the stop', function() return message_since(n, 'stopped;') end)
  report.adapt_job_after_stop = require('codecomplete.adapt').job ~= nil
  n = #report.messages
  vim.cmd.CodecompleteAdapt() -- resumes, with the setup's budget
  report.adapt_done = wait_for('the adapted model', function() return message_since(n, 'adapted to ') end)
  report.status_after_adapt = wait_for('the adapted model to serve', function()
    local s = plugin.status(buf)
    local m = type(s) == 'table' and s.model
    return type(m) == 'table' and m.checkpoint:find('/best$') and type(s.loading) ~= 'string' and s
  end)
  wait_for('the plugin to say it serves the adapted model', function() return message_since(n, 'serving ') end)
  report.completion_after_adapt = request(client, buf, 'textDocument/completion')
  report.client_after_adapt = plugin.clients(buf)[1].id == client.id
end

local function main()
  vim.opt.rtp:prepend(assert(os.getenv('E2E_PLUGIN'), 'E2E_PLUGIN: the plugin folder'))
  vim.cmd.runtime('plugin/codecomplete.lua') -- what Neovim does at startup for plugins on 'runtimepath'
  plugin = require('codecomplete')
  local opts = {
    cmd = vim.json.decode(assert(os.getenv('E2E_SERVER_CMD'))),
    checkpoint = os.getenv('E2E_CHECKPOINT'), threads = 1, min_score = -100, timeout_ms = 10000,
    settings = { numSuggestions = 3, acceptanceLog = false },
  }
  local scenarios = { main = main_scenario, legacy = legacy_scenario, broken = broken_scenario, adapt = adapt_scenario }
  assert(scenarios[SCENARIO], 'unknown E2E_SCENARIO ' .. SCENARIO)(opts)
end

H.run(main, report, watchdog)
