-- Headless Neovim 0.12 drives codecomplete-lsp as a user would: vim.lsp.config + vim.lsp.enable
-- on a Python buffer, the completion popup through <C-x><C-o> and <C-y>, ghost text through
-- vim.lsp.inline_completion, a settings change at run time. It writes what Neovim received as
-- JSON for tests/test_lsp_nvim.py to check; this script only fails on errors and timeouts.
--
--   E2E_SERVER_CMD='["codecomplete-lsp"]' E2E_CHECKPOINT=dir E2E_ACCEPTANCE_LOG=file E2E_OUT=out.json \
--   timeout 120 nvim --headless -u NONE -i NONE -n -c 'luafile tests/nvim/e2e.lua' </dev/null
--
-- Not `nvim -l`: in -l mode Neovim exits as soon as Insert mode waits for a key.
-- Exit code: 0 done, 1 an error or a step timed out, 3 the watchdog fired.

local uv = vim.uv
local HERE = debug.getinfo(1, 'S').source:sub(2):match('(.*)/')
local STEP_MS = tonumber(os.getenv('E2E_TIMEOUT_MS') or '') or 20000
local H = dofile(HERE .. '/harness.lua')('e2e', STEP_MS)
local ms, log, wait_for, typing = H.ms, H.log, H.wait_for, H.typing
local report = { nvim = tostring(vim.version()), timings_ms = {} }
local watchdog = H.watchdog(8)

local function main()
  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir .. '/.git', 'p') -- the root marker
  local path = dir .. '/sample.py'
  local unicode_line = '    label = "😀 漢字" + pa'
  vim.fn.writefile({
    '"""Helpers for a synthetic module."""', 'import json', 'import os', '', '',
    'def parse_line_7(path, items=None):', '    """Return the path for items."""',
    '    items = items or {}', '    for i in ra', unicode_line,
  }, path)
  local FOR_ROW = 8 -- 0-based, the line that ends in "ra"

  vim.o.completeopt = 'menu,menuone,noinsert' -- the first item selected, inserted on <C-y>
  vim.cmd.edit(vim.fn.fnameescape(path))
  local buf = vim.api.nvim_get_current_buf()
  local t = uv.hrtime()
  vim.lsp.config('codecomplete', {
    cmd = vim.json.decode(assert(os.getenv('E2E_SERVER_CMD'))),
    filetypes = { 'python' },
    root_markers = { '.git' },
    init_options = { codecomplete = { -- wrapped, as Neovim users write it
      checkpoint = os.getenv('E2E_CHECKPOINT'), minScore = -100, threads = 1,
      acceptanceLogPath = os.getenv('E2E_ACCEPTANCE_LOG'),
    } },
    settings = { codecomplete = { numSuggestions = 3, timeoutMs = 10000 } },
  })
  vim.lsp.enable('codecomplete')
  vim.bo[buf].filetype = 'python' -- -u NONE has no filetype detection; this attaches the client

  local client = wait_for('the client to initialize', function()
    local c = vim.lsp.get_clients({ bufnr = buf, name = 'codecomplete' })[1]
    return c and c.initialized and c
  end)
  local function status()
    local r = client:request_sync('workspace/executeCommand', { command = 'codecomplete.status' }, STEP_MS, buf)
    return r and r.result
  end
  report.status = wait_for('the model to load', function() local s = status() return s and s.ready and s end)
  report.timings_ms.start_to_ready = ms(t)
  report.offset_encoding = client.offset_encoding
  report.completion_provider = client:supports_method('textDocument/completion')
  report.inline_provider = client:supports_method('textDocument/inlineCompletion')
  local uri = vim.uri_from_bufnr(buf)

  local function request(method, row, col, extra)
    local params = vim.tbl_extend('force', { textDocument = { uri = uri }, position = { line = row, character = col } }, extra or {})
    local r = assert(client:request_sync(method, params, STEP_MS, buf), method .. ' timed out')
    assert(not r.err, vim.inspect(r.err))
    return r.result
  end

  -- What the server sends, as Neovim decodes it (positions in UTF-8 bytes here).
  t = uv.hrtime()
  report.completion = request('textDocument/completion', FOR_ROW, #'    for i in ra', { context = { triggerKind = 1 } })
  report.timings_ms.completion_request = ms(t)
  report.inline_invoked = request('textDocument/inlineCompletion', FOR_ROW, #'    for i in ra', { context = { triggerKind = 1 } })
  report.inline_automatic = request('textDocument/inlineCompletion', FOR_ROW, #'    for i in ra', { context = { triggerKind = 2 } })
  report.unicode = { line = unicode_line, bytes = #unicode_line,
                     completion = request('textDocument/completion', FOR_ROW + 1, #unicode_line, { context = { triggerKind = 1 } }) }

  -- The completion popup: <C-x><C-o> (vim.lsp.omnifunc), then <C-y> accepts the first item.
  vim.lsp.completion.enable(true, client.id, buf, { autotrigger = false })
  vim.api.nvim_win_set_cursor(0, { FOR_ROW + 1, 0 })
  local stage = 0
  t = uv.hrtime()
  report.popup_accepted_line = typing('A<C-x><C-o>', function()
    if stage == 0 then
      local info = vim.fn.complete_info({ 'items', 'pum_visible', 'selected' })
      if #info.items > 0 then
        report.timings_ms.popup = ms(t)
        report.popup = {
          pum_visible = info.pum_visible, selected = info.selected,
          items = vim.tbl_map(function(i) return { word = i.word, abbr = i.abbr, menu = i.menu } end, info.items),
        }
        stage = 1
        vim.api.nvim_feedkeys(vim.keycode('<C-y>'), 'n', false)
      end
      return false
    end
    return vim.fn.pumvisible() == 0 and vim.api.nvim_get_current_line()
  end)
  vim.lsp.completion.enable(false, client.id, buf)

  -- Ghost text: entering Insert mode sends an automatic inlineCompletion (after 200 ms);
  -- the suggestion is an extmark; inline_completion.get() accepts it and runs its command.
  vim.api.nvim_buf_set_lines(buf, FOR_ROW, FOR_ROW + 1, false, { '    for i in ra' })
  vim.lsp.inline_completion.enable(true, { bufnr = buf })
  vim.api.nvim_win_set_cursor(0, { FOR_ROW + 1, 0 })
  local ns = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')
  stage = 0
  t = uv.hrtime()
  report.ghost_accepted_lines = typing('A', function()
    if stage == 0 then
      local marks = vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })
      if #marks > 0 then
        report.timings_ms.ghost = ms(t)
        local d = marks[1][4]
        report.ghost = {
          row = marks[1][2], col = marks[1][3],
          virt_text = table.concat(vim.tbl_map(function(c) return c[1] end, d.virt_text or {})),
          virt_lines = vim.tbl_map(function(l) return table.concat(vim.tbl_map(function(c) return c[1] end, l)) end, d.virt_lines or {}),
        }
        stage = 1
        vim.lsp.inline_completion.get()
      end
      return false
    end
    local lines = vim.api.nvim_buf_get_lines(buf, FOR_ROW, -1, false)
    return lines[1] ~= '    for i in ra' and lines
  end)
  vim.lsp.inline_completion.enable(false, { bufnr = buf })

  -- A settings change at run time, the way a user command would send it.
  client.settings = vim.tbl_deep_extend('force', client.settings, { codecomplete = { numSuggestions = 1 } })
  client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  report.status_after_change = wait_for('the new settings', function()
    local s = status()
    return s and s.settings.numSuggestions == 1 and s
  end)
  vim.api.nvim_buf_set_lines(buf, FOR_ROW, FOR_ROW + 1, false, { '    for i in ra' })
  report.inline_after_change = request('textDocument/inlineCompletion', FOR_ROW, #'    for i in ra', { context = { triggerKind = 1 } })
  report.server_info = client.server_info
end

H.run(main, report, watchdog)
