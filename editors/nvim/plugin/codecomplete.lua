-- User commands; the plugin does nothing else until require('codecomplete').setup() is called.
if vim.g.loaded_codecomplete then
  return
end
vim.g.loaded_codecomplete = true

vim.api.nvim_create_user_command('CodecompleteStatus', function()
  require('codecomplete').show_status()
end, { desc = 'codecomplete: model, device, latency and settings of the running server' })

vim.api.nvim_create_user_command('CodecompleteCheckpoint', function(args)
  require('codecomplete').set_checkpoint(args.args)
end, { nargs = 1, complete = 'dir', desc = 'codecomplete: serve another checkpoint folder, without a restart' })

vim.api.nvim_create_user_command('CodecompleteAdapt', function(args)
  local adapt = require('codecomplete.adapt')
  if args.args == 'cancel' then
    adapt.cancel()
  else
    adapt.start(args.args)
  end
end, {
  nargs = '?', complete = function() return { 'cancel' } end,
  desc = 'codecomplete: fine-tune the model on this workspace in the background ([minutes], or cancel)',
})
