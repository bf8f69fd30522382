-- :CodecompleteAdapt: fine-tune the served model on the workspace folder. The server runs
-- `codecomplete-train adapt` in the background (its codecomplete.adapt command, lsp/adapt.py: one
-- implementation for every editor, with the server's own Python); this follows its $/progress,
-- says when a phase starts, stops it on request (the run saves, so the command again resumes it)
-- and serves the result through the checkpoint swap of :CodecompleteCheckpoint.
local M = {}
local ADAPT = 'codecomplete.adapt'
local TITLE = 'codecomplete: adapting'

--- The running adaptation: { client, folder, token?, phase?, stop? }; nil when none runs.
M.job = nil

-- Stopping is by the progress token, not the request: pygls answers a $/cancelRequest of a command
-- at once and lets the command run on (see lsp/adapt.py).
local function stop(job)
  require('codecomplete').call(job.client, 'notify', 'window/workDoneProgress/cancel', { token = job.token })
end

local function notify(msg, level)
  vim.notify(msg, level or vim.log.levels.INFO, { title = 'codecomplete' })
end

-- $/progress of the server's adapt token: one message as each phase begins (collecting, encoding,
-- fine-tuning, comparing), the percentage in the message area meanwhile.
local function on_progress(ev)
  local job, params = M.job, ev.data and ev.data.params
  if not (job and params and ev.data.client_id == job.client.id) then
    return
  end
  local value = params.value or {}
  if value.kind == 'begin' and type(value.title) == 'string' and value.title:find(TITLE, 1, true) then
    job.token = params.token
    if job.stop then -- asked before the server had begun its progress
      stop(job)
    end
  end
  if params.token ~= job.token or value.kind ~= 'report' or type(value.message) ~= 'string' then
    return
  end
  local phase = value.message:match('^[^:]+')
  if phase ~= job.phase then
    job.phase = phase
    notify(('adapting to %s: %s'):format(vim.fs.basename(job.folder), value.message))
  else
    vim.api.nvim_echo({ { ('codecomplete: %s (%d%%)'):format(value.message, value.percentage or 0) } }, false, {})
  end
end

local function done(err, result)
  local plugin, job = require('codecomplete'), M.job
  M.job = nil
  local name = vim.fs.basename(job.folder)
  if err then
    return notify(err.message, vim.log.levels.ERROR) -- the server's one line: what failed and why
  end
  if type(result) ~= 'table' or result.cancelled or type(result.checkpoint) ~= 'string' then
    return notify(('adapting to %s stopped; :CodecompleteAdapt resumes it'):format(name))
  end
  notify(('adapted to %s: %s'):format(name, result.summary))
  if vim.fs.normalize(plugin.opts.checkpoint or '') == vim.fs.normalize(result.checkpoint) then
    notify('reloading ' .. result.checkpoint) -- the server reloads the folder it serves by itself
  else
    plugin.set_checkpoint(result.checkpoint)
  end
end

--- :CodecompleteAdapt [minutes]: adapt the model to the current buffer's workspace folder.
function M.start(minutes)
  local plugin = require('codecomplete')
  local client = plugin.clients()[1]
  if not client then
    return notify('no codecomplete server is running: open a Python file after setup()', vim.log.levels.WARN)
  end
  if M.job then
    return notify(('adapting to %s already; :CodecompleteAdapt cancel stops it'):format(M.job.folder), vim.log.levels.WARN)
  end
  local folder = client.root_dir or vim.fn.getcwd()
  local opts = plugin.opts.adapt or {}
  minutes = tonumber(minutes) or opts.minutes
  vim.api.nvim_create_autocmd('LspProgress', {
    group = vim.api.nvim_create_augroup('codecomplete-adapt', { clear = true }), callback = on_progress,
  })
  local arg = { folder = folder, minutes = minutes, evalCases = opts.eval_cases }
  local ok = plugin.call(client, 'request', 'workspace/executeCommand', { command = ADAPT, arguments = { arg } }, done)
  if not ok then
    return notify('the codecomplete server did not take the request; is it running?', vim.log.levels.ERROR)
  end
  M.job = { client = client, folder = folder }
  notify(('adapting to %s in the background (%s minutes of fine-tuning); :CodecompleteAdapt cancel stops it'):format(
    folder, minutes))
end

--- :CodecompleteAdapt cancel: the run writes its checkpoint and stops.
function M.cancel()
  local job = M.job
  if not job then
    return notify('no adaptation is running', vim.log.levels.WARN)
  end
  job.stop = true
  if job.token then -- else as soon as its progress begins
    stop(job)
  end
  notify(('stopping the adaptation to %s (it saves first)'):format(vim.fs.basename(job.folder)))
end

return M
