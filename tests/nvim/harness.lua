-- What every headless-Neovim test script needs: timestamps and logging to stderr, a watchdog, the
-- JSON report on exit, polling with a deadline, and typing in Insert mode while probing.
--   local H = dofile(REPO .. '/tests/nvim/harness.lua')('e2e', STEP_MS)
local uv = vim.uv

return function(name, step_ms)
  local H = { T0 = uv.hrtime(), STEP_MS = step_ms }

  function H.ms(since) return math.floor((uv.hrtime() - since) / 1e5) / 10 end
  function H.log(fmt, ...) io.stderr:write(('[%s %7.1fms] ' .. fmt .. '\n'):format(name, H.ms(H.T0), ...)) end

  --- Exit with code 3 if the whole script takes longer than steps * STEP_MS.
  function H.watchdog(steps)
    local timer = assert(uv.new_timer())
    timer:start(step_ms * steps, 0, function() io.stderr:write(('[%s] watchdog fired\n'):format(name)) os.exit(3) end)
    return timer
  end

  --- Write report to $E2E_OUT, stop the language servers, exit with code.
  function H.finish(report, code)
    report.timings_ms.total = H.ms(H.T0)
    local f = assert(io.open(assert(os.getenv('E2E_OUT')), 'w'))
    f:write(vim.json.encode(report))
    f:close()
    for _, c in ipairs(vim.lsp.get_clients()) do c:stop() end -- shutdown + exit
    vim.wait(5000, function() return #vim.lsp.get_clients() == 0 end, 20)
    for _, c in ipairs(vim.lsp.get_clients()) do c:stop(true) end
    vim.cmd('cquit ' .. code)
  end

  --- Run main; stop the watchdog; put any error (with its traceback) in the report; finish.
  function H.run(main, report, watchdog)
    local ok, err = xpcall(main, debug.traceback)
    watchdog:stop()
    if not ok then
      report.error = tostring(err)
      H.log('ERROR %s', err)
    end
    H.finish(report, ok and 0 or 1)
  end

  --- fn()'s first value that is not nil/false, polled every 10 ms; an error after STEP_MS.
  --- (A deadline of its own: fn may wait inside, e.g. in request_sync, which stretches vim.wait's.)
  function H.wait_for(what, fn)
    local deadline = uv.hrtime() + step_ms * 1e6
    repeat
      local value = fn()
      if value ~= nil and value ~= false then return value end
      vim.wait(10)
    until uv.hrtime() > deadline
    error('timed out waiting for ' .. what)
  end

  --- Type keys in Insert mode and stay there while probe() is polled every 10 ms; once it returns
  --- a value (or STEP_MS passes: then nil), leave Insert mode and return it. feedkeys('tx!') blocks
  --- until Insert mode ends, and timers, scheduled callbacks and LSP responses run meanwhile.
  function H.typing(keys, probe)
    local result, t, done = nil, uv.hrtime(), false
    local timer = assert(uv.new_timer())
    timer:start(10, 10, vim.schedule_wrap(function()
      if done then return end
      local ok, r = pcall(probe)
      if not ok then H.log('probe error: %s', r) end
      if (ok and r ~= nil and r ~= false) or not ok or H.ms(t) > step_ms then
        done, result = true, ok and r or nil
        timer:stop()
        timer:close()
        vim.api.nvim_feedkeys(vim.keycode('<C-e><Esc>'), 'n', false)
      end
    end))
    vim.api.nvim_feedkeys(vim.keycode(keys), 'tx!', false)
    return result
  end

  return H
end
