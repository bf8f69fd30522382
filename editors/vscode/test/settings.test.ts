// codecomplete.* settings -> the server's section; and package.json against the server's own list.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { CONTRIBUTED, expandPath, launchSettings, SERVER_KEYS, serverSettings } from '../src/settings';

const ctx = { home: '/home/ada', workspaceFolder: '/work/proj', env: { CKPT: '/models/small' } };
/** What VS Code's WorkspaceConfiguration.get returns: the user's value, else the contributed default. */
const getter = (user: Record<string, unknown>) => (key: string) => (key in user ? user[key] : CONTRIBUTED[key]?.default);

test('server keys are the contributed ones but server.* and trace.*', () => {
  assert.ok(SERVER_KEYS.includes('checkpoint') && SERVER_KEYS.includes('maxNewTokens') && SERVER_KEYS.includes('logLevel'));
  assert.ok(!SERVER_KEYS.some((k) => k.startsWith('server.') || k.startsWith('trace.')));
  for (const key of Object.keys(CONTRIBUTED)) {
    const spec = CONTRIBUTED[key] as { description?: string; markdownDescription?: string; type?: string };
    assert.ok(spec.type && 'default' in spec && (spec.description || spec.markdownDescription), `codecomplete.${key} needs type, default, description`);
  }
});

test('defaults: every server key but the empty paths, which the server defaults itself', () => {
  const s = serverSettings(getter({}), ctx);
  assert.deepEqual(Object.keys(s).sort(), SERVER_KEYS.filter((k) => k !== 'checkpoint' && k !== 'acceptanceLogPath').sort());
  assert.equal(s.device, 'auto');
  assert.equal(s.numSuggestions, 3);
  assert.equal(s.multiline, false);
});

test('user values pass through, paths expanded, unset values left out', () => {
  const s = serverSettings(getter({ checkpoint: '~/models/small', numSuggestions: 5, temperature: undefined, acceptanceLogPath: '${env:CKPT}/log.jsonl' }), ctx);
  assert.equal(s.checkpoint, '/home/ada/models/small');
  assert.equal(s.acceptanceLogPath, '/models/small/log.jsonl');
  assert.equal(s.numSuggestions, 5);
  assert.ok(!('temperature' in s));
  assert.ok(!('server.pythonPath' in s) && !('trace.server' in s));
});

test('path expansion', () => {
  assert.equal(expandPath('${workspaceFolder}/runs/best', ctx), '/work/proj/runs/best');
  assert.equal(expandPath('${userHome}/m', ctx), '/home/ada/m');
  assert.equal(expandPath(' ~ ', ctx), '/home/ada');
  assert.equal(expandPath('runs/best', ctx), 'runs/best'); // relative: the server starts at the workspace root
  assert.equal(expandPath('~user/x', ctx), '~user/x');
  assert.equal(expandPath('${workspaceFolder}/x', { ...ctx, workspaceFolder: undefined }), '${workspaceFolder}/x');
  assert.equal(expandPath('${env:NOPE}/x', ctx), '/x');
});

test('launch settings', () => {
  assert.deepEqual(launchSettings(getter({}), ctx), { command: [], pythonPath: '' });
  const s = launchSettings(getter({ 'server.command': ['~/venv/bin/codecomplete-lsp', '', 3, '--log-level', 'debug'], 'server.pythonPath': '~/venv/bin/python' }), ctx);
  assert.deepEqual(s, { command: ['/home/ada/venv/bin/codecomplete-lsp', '--log-level', 'debug'], pythonPath: '/home/ada/venv/bin/python' });
});

// The server's Settings dataclass is the source of truth: package.json must offer each of its
// fields under the same camelCase name, with the same default and choices.
const SERVER_PY = path.resolve(__dirname, '../../../../lsp/settings.py');
test('package.json matches the server settings in lsp/settings.py', { skip: !fs.existsSync(SERVER_PY) && 'no lsp/settings.py' }, () => {
  const py = fs.readFileSync(SERVER_PY, 'utf8');
  const camel = (name: string) => name.replace(/_(\w)/g, (_, c: string) => c.toUpperCase());
  const tuple = (name: string) => [...(new RegExp(`^${name} = \\(([^)]*)\\)`, 'm').exec(py)?.[1] ?? '').matchAll(/"([^"]+)"/g)].map((m) => m[1]);
  const fields = [...py.matchAll(/^ {4}(\w+): [^=]+= _spec\(([^,]+),/gm)].map((m) => [camel(m[1]), m[2].trim()] as const);
  assert.ok(fields.length >= 10, 'parsed the Settings fields');
  assert.deepEqual(fields.map(([k]) => k).sort(), [...SERVER_KEYS].sort());
  for (const [key, literal] of fields) {
    const expected = literal === 'None' ? '' : literal === 'True' ? true : literal === 'False' ? false : JSON.parse(literal);
    assert.equal(CONTRIBUTED[key].default, expected, `codecomplete.${key} default`);
  }
  assert.deepEqual(CONTRIBUTED.device.enum, tuple('DEVICES'));
  assert.deepEqual(CONTRIBUTED.logLevel.enum, tuple('LOG_LEVELS'));
});
