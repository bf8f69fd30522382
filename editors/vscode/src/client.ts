// The language client: how it starts the server, which settings it answers with, and timing of
// each suggestion request for the status bar.
import os from 'node:os';
import readline from 'node:readline';
import type { Readable } from 'node:stream';
import * as vscode from 'vscode';
import {
  ExecuteCommandRequest,
  LanguageClient,
  type LanguageClientOptions,
  type MessageType,
  ShowMessageNotification,
} from 'vscode-languageclient/node';
import { resolveLaunch, spawnServer, type Launch } from './server';
import { SECTION, launchSettings, serverSettings, type PathContext } from './settings';
import type { ServerStatus } from './status';

export function pathContext(): PathContext {
  return { home: os.homedir(), workspaceFolder: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath, env: process.env };
}

/** The server's `codecomplete` section, from the current codecomplete.* settings. */
export function currentSettings(): Record<string, unknown> {
  const cfg = vscode.workspace.getConfiguration(SECTION);
  return serverSettings((key) => cfg.get(key), pathContext());
}

export function currentLaunch(): Launch {
  const cfg = vscode.workspace.getConfiguration(SECTION);
  return resolveLaunch(launchSettings((key) => cfg.get(key), pathContext()), process.env);
}

export function serverCwd(): string {
  return pathContext().workspaceFolder ?? os.homedir();
}

export interface Hooks {
  latency(kind: string, ms: number): void;
  serverMessage(type: MessageType, text: string): void;
}

/** Run a provider request; report how long the editor waited unless it was cancelled. */
async function timed<T>(kind: string, token: vscode.CancellationToken, hooks: Hooks, run: () => vscode.ProviderResult<T>): Promise<T | null | undefined> {
  const t0 = Date.now();
  const result = await run();
  if (!token.isCancellationRequested) hooks.latency(kind, Date.now() - t0);
  return result;
}

// The server logs each record twice: to stderr and as window/logMessage, which the client shows at
// its level. Its stderr copies go to trace; anything else there (a traceback) is an error.
const LOG_RECORD = /^codecomplete (DEBUG|INFO|WARNING|ERROR) /;
const eachLine = (input: Readable, fn: (line: string) => void) =>
  readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on('line', fn);

export function createClient(output: vscode.LogOutputChannel, hooks: Hooks): LanguageClient {
  const options: LanguageClientOptions = {
    documentSelector: [{ language: 'python', scheme: 'file' }, { language: 'python', scheme: 'untitled' }],
    outputChannel: output,
    // No initializationOptions: the server asks workspace/configuration right after initialize,
    // and an option sent at start could not be taken back by clearing the setting later.
    middleware: {
      workspace: {
        configuration: async (params, token, next) => {
          const answers = await next(params, token);
          if (!Array.isArray(answers)) return answers;
          return answers.map((a, i) => (params.items[i]?.section === SECTION ? currentSettings() : a));
        },
      },
      provideCompletionItem: (doc, pos, ctx, token, next) => timed('completion', token, hooks, () => next(doc, pos, ctx, token)),
      provideInlineCompletionItems: (doc, pos, ctx, token, next) => timed('inline', token, hooks, () => next(doc, pos, ctx, token)),
    },
    initializationFailedHandler: () => false,
    stdioOptions: {
      stdout: (input, out) => eachLine(input, (line) => out.info(line)),
      stderr: (input, out) => eachLine(input, (line) => (LOG_RECORD.test(line) ? out.trace(line) : out.error(line))),
    },
  };
  // A function, so that each (re)start reads the codecomplete.server.* settings anew.
  const client = new LanguageClient(SECTION, 'CodeComplete', () => spawnServer(currentLaunch(), process.env, serverCwd()), options);
  // Registered before start(): replaces the client's plain popup with one that can name the fix.
  client.onNotification(ShowMessageNotification.type, (m) => hooks.serverMessage(m.type, m.message));
  return client;
}

export async function fetchStatus(client: LanguageClient): Promise<ServerStatus | undefined> {
  if (!client.isRunning()) return undefined;
  return client.sendRequest(ExecuteCommandRequest.type, { command: 'codecomplete.status', arguments: [] });
}
