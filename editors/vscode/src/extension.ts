// CodeComplete for VS Code: completions and ghost text from codecomplete-lsp, which runs in the
// user's own Python environment. Commands: pick a checkpoint folder, restart the server, status, and
// adapt the model to the workspace (adapt.ts).
import * as vscode from 'vscode';
import { DidChangeConfigurationNotification, type LanguageClient, MessageType, State } from 'vscode-languageclient/node';
import { adaptWorkspace } from './adapt';
import { createClient, currentLaunch, currentSettings, fetchStatus, serverCwd } from './client';
import { describe, diagnoseServerMessage, preflight } from './server';
import { SECTION } from './settings';
import { showFailure, StatusBar, summary } from './status';

const CHECKPOINT_FILES = ['config.json', 'model.safetensors', 'tokenizer.json'];
let client: LanguageClient | undefined;
let statusBar: StatusBar;
let output: vscode.LogOutputChannel;
let queue: Promise<unknown> = Promise.resolve(); // starts and restarts, one at a time

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel('CodeComplete', { log: true });
  statusBar = new StatusBar(async () => (client ? fetchStatus(client) : undefined));
  client = createClient(output, { latency: (kind, ms) => statusBar.latency(kind, ms), serverMessage });
  const command = (id: string, run: () => unknown) => vscode.commands.registerCommand(id, run);
  context.subscriptions.push(
    output,
    statusBar,
    command('codecomplete.pickCheckpoint', pickCheckpoint),
    command('codecomplete.restartServer', restart),
    command('codecomplete.showStatus', showStatus),
    command('codecomplete.showLog', () => output.show(true)),
    command('codecomplete.adaptWorkspace', () => adaptWorkspace(client, output)),
    vscode.workspace.onDidChangeConfiguration(configurationChanged),
    client.onDidChangeState(({ newState }) => {
      if (newState === State.Stopped) {
        statusBar.failed({ message: 'CodeComplete: the server stopped.', fix: 'Run CodeComplete: Restart Server; the CodeComplete output has its last words.' });
      }
    }),
  );
  await (queue = queue.then(start));
}

export async function deactivate(): Promise<void> {
  await client?.stop().catch(() => undefined);
}

/** Check that the server can start (`--version`), then start it; a failure says what to fix. */
async function start(): Promise<boolean> {
  const launch = currentLaunch();
  output.info(`starting ${describe(launch)} (${launch.via})`);
  statusBar.starting();
  const { version, failure } = await preflight(launch, process.env, serverCwd());
  if (failure) {
    output.error(`${failure.message} ${failure.fix}`);
    statusBar.failed(failure);
    void showFailure(failure);
    return false;
  }
  output.info(`${version} found`);
  try {
    await client!.start();
  } catch (e) {
    statusBar.failed({ message: `CodeComplete: the server stopped while starting: ${e}`, fix: 'The CodeComplete output has its error.' });
    return false;
  }
  void statusBar.refresh();
  return true;
}

function restart(): Promise<unknown> {
  return (queue = queue.then(async () => {
    if (client?.isRunning()) await client.stop().catch((e) => output.warn(`stopping the server: ${e}`));
    await start();
  }));
}

function configurationChanged(e: vscode.ConfigurationChangeEvent): void {
  if (!e.affectsConfiguration(SECTION)) return;
  if (e.affectsConfiguration(`${SECTION}.server`)) {
    void restart(); // another Python or command: only a new process can take it
    return;
  }
  if (!client?.isRunning()) return;
  // The whole section each time: the server replaces what it had; a new checkpoint loads in
  // the background while the old one keeps serving.
  void client.sendNotification(DidChangeConfigurationNotification.type, { settings: { [SECTION]: currentSettings() } });
  void statusBar.refresh(3000);
}

/** window/showMessage from the server, with a button for the fix when there is a known one. */
function serverMessage(type: MessageType, text: string): void {
  output[type === MessageType.Error ? 'error' : type === MessageType.Warning ? 'warn' : 'info'](text);
  const failure = type <= MessageType.Warning ? diagnoseServerMessage(text) : undefined;
  if (failure) {
    void showFailure(failure, type === MessageType.Error ? 'error' : 'warning');
    void statusBar.refresh();
  } else if (type === MessageType.Error) void vscode.window.showErrorMessage(text);
  else if (type === MessageType.Warning) void vscode.window.showWarningMessage(text);
  else void vscode.window.showInformationMessage(text);
}

async function showStatus(): Promise<void> {
  const s = client ? await fetchStatus(client).catch(() => undefined) : undefined;
  if (!s) {
    const picked = await vscode.window.showWarningMessage('CodeComplete: the server is not running.', 'Restart Server', 'Show Log');
    if (picked === 'Restart Server') await restart();
    if (picked === 'Show Log') output.show(true);
    return;
  }
  output.info(`codecomplete.status: ${JSON.stringify(s, null, 2)}`);
  const picked = await vscode.window.showInformationMessage(summary(s, statusBar.last), 'Show Details', 'Pick Checkpoint Folder…');
  if (picked === 'Show Details') output.show(true);
  if (picked === 'Pick Checkpoint Folder…') await pickCheckpoint();
}

/** Choose a folder and write it to codecomplete.checkpoint, where it is set now (else the user settings). */
async function pickCheckpoint(): Promise<void> {
  const current = currentSettings().checkpoint;
  const picked = await vscode.window.showOpenDialog({
    canSelectFolders: true, canSelectFiles: false, canSelectMany: false,
    title: 'CodeComplete: checkpoint folder', openLabel: 'Serve This Checkpoint',
    defaultUri: typeof current === 'string' ? vscode.Uri.file(current) : undefined,
  });
  const folder = picked?.[0];
  if (!folder) return;
  const missing: string[] = [];
  for (const name of CHECKPOINT_FILES) {
    await vscode.workspace.fs.stat(vscode.Uri.joinPath(folder, name)).then(undefined, () => missing.push(name));
  }
  if (missing.length > 0) {
    const answer = await vscode.window.showWarningMessage(
      `${folder.fsPath} has no ${missing.join(', ')}: it does not look like a checkpoint folder.`, 'Use It Anyway');
    if (answer !== 'Use It Anyway') return;
  }
  const cfg = vscode.workspace.getConfiguration(SECTION);
  const inWorkspace = cfg.inspect('checkpoint')?.workspaceValue !== undefined;
  await cfg.update('checkpoint', folder.fsPath, inWorkspace ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global);
}
