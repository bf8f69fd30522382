// CodeComplete: Adapt to This Workspace. The server runs `codecomplete-train adapt` on the folder in
// the background (lsp/adapt.py: one implementation for every editor, with the server's own Python);
// this asks for the budget, shows the server's progress in a notification whose Cancel stops it
// (it saves, so running the command again resumes), and serves the result by writing
// codecomplete.checkpoint for this workspace: the server swaps models without a restart.
// Cancel cancels the progress token, not the request: pygls answers a $/cancelRequest of a command
// at once and lets the command run on (see lsp/adapt.py).
import * as vscode from 'vscode';
import { ExecuteCommandRequest, type LanguageClient, WorkDoneProgress, WorkDoneProgressCancelNotification } from 'vscode-languageclient/node';
import { SECTION } from './settings';

const ADAPT = 'codecomplete.adapt';
const TITLE = 'CodeComplete: Adapt to This Workspace';

interface AdaptResult {
  checkpoint?: string;
  summary?: string;
  cancelled?: boolean;
}

async function pickFolder(): Promise<vscode.WorkspaceFolder | undefined> {
  const folders = vscode.workspace.workspaceFolders ?? [];
  if (folders.length <= 1) return folders[0];
  return vscode.window.showWorkspaceFolderPick({ placeHolder: 'The folder whose Python code the model learns' });
}

export async function adaptWorkspace(client: LanguageClient | undefined, output: vscode.LogOutputChannel): Promise<void> {
  if (!client?.isRunning()) {
    void vscode.window.showErrorMessage('CodeComplete: the server is not running; run CodeComplete: Restart Server, then adapt.');
    return;
  }
  const folder = await pickFolder();
  if (!folder) {
    void vscode.window.showErrorMessage('CodeComplete: open a folder first: the model adapts to the Python code of a workspace folder.');
    return;
  }
  const minutes = await vscode.window.showInputBox({
    title: TITLE, value: '10', prompt: `Minutes of fine-tuning on ${folder.name} (collecting its files and comparing with the base model come on top)`,
    validateInput: (v) => (Number(v) > 0 ? undefined : 'A number of minutes above 0, e.g. 10'),
  });
  if (minutes === undefined) return;
  const workDoneToken = `codecomplete-adapt-${Date.now()}`;
  const options = { location: vscode.ProgressLocation.Notification, title: `CodeComplete: adapting to ${folder.name}`, cancellable: true };
  await vscode.window.withProgress(options, async (progress, cancel) => {
    let reported = 0;
    const listening = client.onProgress(WorkDoneProgress.type, workDoneToken, (value) => {
      if (value.kind === 'end' || cancel.isCancellationRequested) return;
      const percentage = value.percentage ?? reported;
      progress.report({ message: value.message, increment: Math.max(0, percentage - reported) });
      reported = Math.max(reported, percentage);
    });
    const stopping = cancel.onCancellationRequested(() => {
      progress.report({ message: 'stopping: it saves a checkpoint first' });
      void client.sendNotification(WorkDoneProgressCancelNotification.type, { token: workDoneToken });
    });
    try {
      const params = { command: ADAPT, arguments: [{ folder: folder.uri.fsPath, minutes: Number(minutes), workDoneToken }] };
      const result = (await client.sendRequest(ExecuteCommandRequest.type, params)) as AdaptResult;
      if (result.cancelled || !result.checkpoint) {
        void vscode.window.showInformationMessage(`CodeComplete: adapting to ${folder.name} stopped; run ${TITLE} again to resume it.`);
        return;
      }
      output.info(`adapted to ${folder.name}: ${result.checkpoint}: ${result.summary}`);
      await vscode.workspace.getConfiguration(SECTION).update('checkpoint', result.checkpoint, vscode.ConfigurationTarget.Workspace);
      void vscode.window.showInformationMessage(`CodeComplete serves the model adapted to ${folder.name} (${result.summary}).`);
    } catch (e) {
      void vscode.window.showErrorMessage(`CodeComplete: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      listening.dispose();
      stopping.dispose();
    }
  });
}
