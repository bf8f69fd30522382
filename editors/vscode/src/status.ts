// The status-bar item (model, device, last latency) and the messages that tell what is wrong.
import path from 'node:path';
import * as vscode from 'vscode';
import type { Failure } from './server';

/** What the server's codecomplete.status command answers (lsp/server.py, status()). */
export interface ServerStatus {
  version: string;
  ready: boolean;
  model: { checkpoint: string; device: string; params: number; loadMs: number } | null;
  loading: string | null;
  error: string | null;
  settings: Record<string, unknown>;
  latencies: { kind: string; serverMs: number; items: number }[];
  workspace?: { folder: string; files: number; mb: number; index: { tokens: number; build_s: number } | null }[];
}

const POLL_MS = 500;
const POLL_LIMIT_MS = 10 * 60 * 1000; // a model on a slow disk, or a cold torch import

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('codecomplete.status', vscode.StatusBarAlignment.Right, 100);
  private status?: ServerStatus;
  private failure?: Failure;
  private timer?: NodeJS.Timeout;
  last?: { kind: string; ms: number }; // the latest suggestion request, as the editor waited for it

  constructor(private readonly fetch: () => Promise<ServerStatus | undefined>) {
    this.item.name = 'CodeComplete';
    this.item.command = 'codecomplete.showStatus';
    this.starting();
    this.item.show();
  }

  starting(): void {
    this.status = this.failure = undefined;
    this.show('$(sync~spin) CodeComplete', 'CodeComplete: starting the server');
  }

  failed(failure: Failure): void {
    this.failure = failure;
    this.show('$(error) CodeComplete', `${failure.message}\n\n${failure.fix}`, 'statusBarItem.errorBackground');
  }

  latency(kind: string, ms: number): void {
    this.last = { kind, ms };
    this.render();
  }

  /** Ask the server, and again every POLL_MS while a model loads or for at least minMs. */
  async refresh(minMs = 0): Promise<void> {
    clearTimeout(this.timer);
    const until = Date.now() + minMs;
    const limit = Date.now() + POLL_LIMIT_MS;
    const tick = async () => {
      this.status = await this.fetch().catch(() => undefined);
      this.render();
      const busy = this.status && (this.status.loading || (!this.status.ready && !this.status.error));
      if ((busy || Date.now() < until) && Date.now() < limit && !this.failure) {
        this.timer = setTimeout(tick, POLL_MS);
      }
    };
    await tick();
  }

  private render(): void {
    const s = this.status;
    if (this.failure || !s) return;
    const model = s.model ? `${path.basename(s.model.checkpoint)} · ${s.model.device}` : 'no model';
    const ms = this.last ? ` · ${this.last.ms} ms` : '';
    const tip = summary(s, this.last);
    if (s.loading) this.show(`$(sync~spin) ${path.basename(s.loading)}`, tip);
    else if (s.error) this.show(`$(warning) ${model}`, tip, 'statusBarItem.warningBackground');
    else this.show(`$(sparkle) ${model}${ms}`, tip);
  }

  private show(text: string, tooltip: string, background?: string): void {
    this.item.text = text;
    this.item.tooltip = tooltip;
    this.item.backgroundColor = background ? new vscode.ThemeColor(background) : undefined;
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.item.dispose();
  }
}

/** One paragraph: what serves, where, how fast; what is loading; what went wrong. */
export function summary(s: ServerStatus, last?: { kind: string; ms: number }): string {
  const parts: string[] = [];
  if (s.model) {
    const m = s.model;
    parts.push(`CodeComplete serves ${m.checkpoint} on ${m.device} (${(m.params / 1e6).toFixed(1)}M parameters, loaded in ${Math.round(m.loadMs)} ms).`);
  } else {
    parts.push('CodeComplete has no model loaded.');
  }
  if (s.loading) parts.push(`Loading ${s.loading}.`);
  if (s.error) parts.push(s.error);
  const server = s.latencies.at(-1);
  if (last) parts.push(`Last ${last.kind}: ${last.ms} ms in the editor${server ? `, ${Math.round(server.serverMs)} ms in the server` : ''}.`);
  for (const f of s.workspace ?? []) {
    const index = f.index ? `, ${f.index.tokens.toLocaleString()} tokens indexed in ${f.index.build_s.toFixed(1)} s` : ', indexing';
    parts.push(`Repository context of ${path.basename(f.folder)}: ${f.files} files (${f.mb} MB)${index}.`);
  }
  return parts.join(' ');
}

/** A failure as a notification whose buttons lead to the fix. */
export async function showFailure(f: Failure, severity: 'error' | 'warning' = 'error'): Promise<void> {
  const actions: Record<string, () => Thenable<unknown>> = {};
  if (f.setting === 'codecomplete.checkpoint') {
    actions['Pick Checkpoint Folder…'] = () => vscode.commands.executeCommand('codecomplete.pickCheckpoint');
  }
  if (f.setting) {
    actions['Open Setting'] = () => vscode.commands.executeCommand('workbench.action.openSettings', f.setting);
  }
  actions['Show Log'] = () => vscode.commands.executeCommand('codecomplete.showLog');
  const show = severity === 'error' ? vscode.window.showErrorMessage : vscode.window.showWarningMessage;
  const picked = await show(`${f.message.replace(/[.;:]?\s*$/, '.')} Fix: ${f.fix}`, ...Object.keys(actions));
  if (picked) await actions[picked]();
}
