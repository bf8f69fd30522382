// Starting codecomplete-lsp from the user's own Python environment (torch is never bundled), and
// saying what to do when it cannot start. Pure Node (no `vscode` import), so `npm test` runs it.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { LaunchSettings } from './settings';

export const MODULE = 'codecomplete.lsp'; // what the codecomplete-lsp console script runs
const INSTALL = 'python -m pip install /path/to/codecomplete';
// The other way: a tool install puts codecomplete-lsp on PATH, used when pythonPath is empty.
const TOOL = 'or install the server with `pipx install /path/to/codecomplete` (or `uv tool install`) and leave codecomplete.server.pythonPath empty';

export interface Launch {
  command: string;
  args: string[];
  via: string; // which setting or fallback chose it, for messages
}

/** What went wrong and what the user should do; `setting` names the setting that fixes it. */
export interface Failure {
  message: string;
  fix: string;
  setting?: 'codecomplete.server.pythonPath' | 'codecomplete.checkpoint';
}

export function findOnPath(name: string, env: NodeJS.ProcessEnv, platform = process.platform): string | undefined {
  const exts = platform === 'win32' ? (env.PATHEXT ?? '.EXE;.CMD').split(';') : [''];
  const dirs = (env.PATH ?? '').split(platform === 'win32' ? ';' : ':').filter(Boolean);
  for (const dir of dirs) {
    for (const ext of exts) {
      const file = path.join(dir, name + ext);
      try {
        fs.accessSync(file, fs.constants.X_OK);
        if (fs.statSync(file).isFile()) return file;
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

/** codecomplete.server.command, else pythonPath -m codecomplete.lsp, else codecomplete-lsp on PATH, else python3. */
export function resolveLaunch(s: LaunchSettings, env: NodeJS.ProcessEnv, platform = process.platform): Launch {
  if (s.command.length > 0) {
    return { command: s.command[0], args: s.command.slice(1), via: 'codecomplete.server.command' };
  }
  if (s.pythonPath) {
    return { command: s.pythonPath, args: ['-m', MODULE], via: 'codecomplete.server.pythonPath' };
  }
  const script = findOnPath('codecomplete-lsp', env, platform);
  if (script) {
    return { command: script, args: [], via: 'codecomplete-lsp on PATH' };
  }
  const python = platform === 'win32' ? 'python' : 'python3';
  return { command: python, args: ['-m', MODULE], via: `${python} on PATH, as codecomplete.server.pythonPath is not set` };
}

export function describe(launch: Launch): string {
  return [launch.command, ...launch.args].join(' ');
}

const lastLine = (text: string) => text.trim().split('\n').pop()?.trim() ?? '';

/** Why `launch` did not start: the spawn error, or its exit code and what it wrote to stderr. */
export function diagnoseStart(launch: Launch, r: { error?: NodeJS.ErrnoException; code: number | null; stderr: string }): Failure {
  const who = `${launch.command} (from ${launch.via})`;
  const setPython = `Set codecomplete.server.pythonPath to a Python that has codecomplete installed (${INSTALL}), ${TOOL}.`;
  if (r.error?.code === 'ENOENT') {
    return { message: `CodeComplete cannot start its server: ${who} was not found.`, fix: setPython, setting: 'codecomplete.server.pythonPath' };
  }
  if (r.error?.code === 'EACCES') {
    return { message: `CodeComplete cannot start its server: ${who} is not executable.`, fix: setPython, setting: 'codecomplete.server.pythonPath' };
  }
  const missing = /No module named '?([\w.]+)'?/.exec(r.stderr)?.[1];
  if (missing) {
    const top = missing.split('.')[0];
    const what = top === 'codecomplete'
      ? 'the codecomplete package is not installed in that Python'
      : `that Python lacks ${top}, which codecomplete needs`;
    const there = launch.command.includes('python') ? `${launch.command} -m pip install /path/to/codecomplete` : INSTALL;
    const fix = `Install it there (${there}), set codecomplete.server.pythonPath to a Python that has it, ${TOOL}.`;
    return { message: `CodeComplete cannot start its server: ${what} (${who}: No module named '${missing}').`, fix, setting: 'codecomplete.server.pythonPath' };
  }
  if (/SyntaxError|requires a different Python/.test(r.stderr)) {
    return { message: `CodeComplete cannot start its server: ${who} is too old a Python.`, fix: `codecomplete needs Python 3.11 or newer. ${setPython}`, setting: 'codecomplete.server.pythonPath' };
  }
  const why = r.code === null ? 'did not answer in time' : `exited with code ${r.code}: ${lastLine(r.stderr) || 'no output'}`;
  return { message: `CodeComplete cannot start its server: ${describe(launch)} ${why}.`, fix: 'The CodeComplete output has the whole error.' };
}

/** A fix for the server's own error messages (window/showMessage), when there is a known one. */
export function diagnoseServerMessage(text: string): Failure | undefined {
  const missing = /No module named '?([\w.]+)'?/.exec(text)?.[1];
  if (missing) {
    return { message: text, fix: `The server's Python lacks ${missing.split('.')[0]}: ${INSTALL} in it installs everything codecomplete needs.`, setting: 'codecomplete.server.pythonPath' };
  }
  if (/cannot load checkpoint|no model at/.test(text)) {
    return { message: text, fix: 'Pick a checkpoint folder (config.json, model.safetensors, tokenizer.json), or train one with `codecomplete-train quickstart`.', setting: 'codecomplete.checkpoint' };
  }
  return undefined;
}

/** Run the launch with --version: cheap (no model, no torch), and it finds every install problem. */
export function preflight(launch: Launch, env: NodeJS.ProcessEnv, cwd: string, timeoutMs = 30000): Promise<{ version?: string; failure?: Failure }> {
  return new Promise((resolve) => {
    const child = spawn(launch.command, [...launch.args, '--version'], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ failure: diagnoseStart(launch, { error, code: null, stderr }) });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve(code === 0 ? { version: stdout.trim() } : { failure: diagnoseStart(launch, { code, stderr: stderr || stdout }) });
    });
  });
}

/** Spawn the server for the language client; rejects (ENOENT, EACCES) instead of emitting 'error' later. */
export function spawnServer(launch: Launch, env: NodeJS.ProcessEnv, cwd: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(launch.command, launch.args, { env, cwd, stdio: 'pipe' });
    child.once('spawn', () => resolve(child));
    child.once('error', reject);
  });
}
