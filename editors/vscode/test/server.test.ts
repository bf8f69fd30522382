// Which command starts the server, and what the user is told when it cannot start.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { diagnoseServerMessage, diagnoseStart, findOnPath, preflight, resolveLaunch, spawnServer } from '../src/server';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'codecomplete-vscode-test-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/** An executable script standing in for the server: it answers --version by running `body`. */
function fakeServer(name: string, body: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, `#!${process.execPath}\n${body}\n`, { mode: 0o755 });
  return file;
}

const none = { command: [], pythonPath: '' };

test('server.command wins, then pythonPath, then codecomplete-lsp on PATH, then python3', () => {
  const bin = path.join(tmp, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  const env = { PATH: `/nonexistent:${bin}` };
  assert.deepEqual(resolveLaunch({ command: ['/opt/cc', '--log-level', 'debug'], pythonPath: '/py' }, env),
    { command: '/opt/cc', args: ['--log-level', 'debug'], via: 'codecomplete.server.command' });
  assert.deepEqual(resolveLaunch({ command: [], pythonPath: '/venv/bin/python' }, env),
    { command: '/venv/bin/python', args: ['-m', 'codecomplete.lsp'], via: 'codecomplete.server.pythonPath' });
  assert.equal(resolveLaunch(none, env).command, 'python3');
  assert.deepEqual(resolveLaunch(none, env).args, ['-m', 'codecomplete.lsp']);
  fs.writeFileSync(path.join(bin, 'codecomplete-lsp'), '', { mode: 0o644 }); // not executable: skipped
  assert.equal(resolveLaunch(none, env).command, 'python3');
  fs.chmodSync(path.join(bin, 'codecomplete-lsp'), 0o755);
  assert.deepEqual(resolveLaunch(none, env), { command: path.join(bin, 'codecomplete-lsp'), args: [], via: 'codecomplete-lsp on PATH' });
  assert.equal(resolveLaunch(none, env, 'win32').command, 'python');
});

test('findOnPath skips folders and empty PATH entries', () => {
  fs.mkdirSync(path.join(tmp, 'dir', 'codecomplete-lsp'), { recursive: true });
  assert.equal(findOnPath('codecomplete-lsp', { PATH: `::${path.join(tmp, 'dir')}` }), undefined);
});

test('a missing interpreter names the setting that fixes it', () => {
  const launch = resolveLaunch({ command: [], pythonPath: '/no/python' }, {});
  const error = Object.assign(new Error('spawn /no/python ENOENT'), { code: 'ENOENT' });
  const f = diagnoseStart(launch, { error, code: null, stderr: '' });
  assert.match(f.message, /\/no\/python \(from codecomplete\.server\.pythonPath\) was not found/);
  assert.match(f.fix, /codecomplete\.server\.pythonPath.*pip install .*pipx install/);
  assert.equal(f.setting, 'codecomplete.server.pythonPath');
});

test('missing Python packages: ours, or one of our dependencies', () => {
  const launch = resolveLaunch({ command: [], pythonPath: '/usr/bin/python3' }, {});
  const ours = diagnoseStart(launch, { code: 1, stderr: "/usr/bin/python3: Error while finding module specification for 'codecomplete.lsp' (ModuleNotFoundError: No module named 'codecomplete')\n" });
  assert.match(ours.message, /codecomplete package is not installed in that Python/);
  assert.match(ours.fix, /\/usr\/bin\/python3 -m pip install \/path\/to\/codecomplete.*pipx install/);
  const dep = diagnoseStart(launch, { code: 1, stderr: "Traceback ...\nModuleNotFoundError: No module named 'pygls'\n" });
  assert.match(dep.message, /lacks pygls, which codecomplete needs/);
  const other = diagnoseStart(launch, { code: 2, stderr: 'line 1\nRuntimeError: boom\n' });
  assert.match(other.message, /exited with code 2: RuntimeError: boom/);
  assert.equal(other.setting, undefined);
});

test("the server's own errors: a bad checkpoint, torch missing, anything else", () => {
  const bad = diagnoseServerMessage('codecomplete: cannot load checkpoint /x: checkpoint /x is not a folder; completions are off until one loads');
  assert.equal(bad?.setting, 'codecomplete.checkpoint');
  assert.equal(diagnoseServerMessage("codecomplete: no model at /m/default; set `codecomplete.checkpoint` to a checkpoint folder")?.setting, 'codecomplete.checkpoint');
  const torch = diagnoseServerMessage("codecomplete: cannot load checkpoint /x: No module named 'torch'; completions are off until one loads");
  assert.equal(torch?.setting, 'codecomplete.server.pythonPath');
  assert.match(torch!.fix, /lacks torch/);
  assert.equal(diagnoseServerMessage('codecomplete: unknown setting codecomplete.x (from workspace settings) is ignored'), undefined);
});

test('preflight runs --version: found, failing, missing, hanging', async () => {
  const ok = fakeServer('ok-server', "console.log(process.argv.includes('--version') ? 'codecomplete-lsp 9.9.9' : 'no')");
  assert.deepEqual(await preflight({ command: ok, args: [], via: 't' }, process.env, tmp), { version: 'codecomplete-lsp 9.9.9' });
  const noModule = fakeServer('bad-server', "process.stderr.write(\"ModuleNotFoundError: No module named 'codecomplete'\\n\"); process.exit(1)");
  const f = (await preflight({ command: noModule, args: [], via: 't' }, process.env, tmp)).failure;
  assert.match(f!.message, /codecomplete package is not installed/);
  const missing = (await preflight({ command: path.join(tmp, 'nope'), args: [], via: 't' }, process.env, tmp)).failure;
  assert.match(missing!.message, /was not found/);
  const hang = fakeServer('hang-server', 'setTimeout(() => {}, 60000)');
  const slow = (await preflight({ command: hang, args: [], via: 't' }, process.env, tmp, 300)).failure;
  assert.match(slow!.message, /did not answer in time/);
});

const VENV_PYTHON = path.resolve(__dirname, '../../../../.venv/bin/python');
test('preflight against the real server in the repository venv', { skip: !fs.existsSync(VENV_PYTHON) && 'no .venv' }, async () => {
  const launch = resolveLaunch({ command: [], pythonPath: VENV_PYTHON }, process.env);
  const { version, failure } = await preflight(launch, process.env, tmp);
  assert.equal(failure, undefined);
  assert.match(version!, /^codecomplete-lsp \d+\.\d+\.\d+$/);
});

test('spawnServer rejects a missing command and hands over a running one', async () => {
  await assert.rejects(spawnServer({ command: path.join(tmp, 'nope'), args: [], via: 't' }, process.env, tmp), /ENOENT/);
  const child = await spawnServer({ command: fakeServer('echo-server', 'process.stdin.pipe(process.stdout)'), args: [], via: 't' }, process.env, tmp);
  child.stdin!.end('ping');
  const out = await new Promise<string>((resolve) => { let s = ''; child.stdout!.on('data', (d) => (s += d)).on('end', () => resolve(s)); });
  assert.equal(out, 'ping');
});
