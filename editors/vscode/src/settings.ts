// codecomplete.* settings -> what the server gets. Pure (no `vscode` import), so `npm test` runs it.
//
// package.json's contributes.configuration is the one list of keys: every codecomplete.<key>
// there is a server setting, except codecomplete.server.* (how to start the server) and
// codecomplete.trace.* (vscode-languageclient's), which stay in the extension.
import pkg from '../package.json';

export const SECTION = 'codecomplete';
const CLIENT_PREFIXES = ['server.', 'trace.'];
const PATH_KEYS = new Set(['checkpoint', 'acceptanceLogPath']);

/** The contributed settings, keyed without the `codecomplete.` prefix. */
export const CONTRIBUTED: Record<string, { default?: unknown; type?: string; enum?: string[] }> =
  Object.fromEntries(Object.entries(pkg.contributes.configuration.properties)
    .map(([key, spec]) => [key.slice(SECTION.length + 1), spec]));

/** Keys of the server's `codecomplete` section, camelCase as on the wire. */
export const SERVER_KEYS = Object.keys(CONTRIBUTED).filter((k) => !CLIENT_PREFIXES.some((p) => k.startsWith(p)));

export interface PathContext {
  home: string;
  workspaceFolder?: string;
  env: Record<string, string | undefined>;
}

/** `~`, `${userHome}`, `${workspaceFolder}` and `${env:NAME}` in a path setting. */
export function expandPath(value: string, ctx: PathContext): string {
  let out = value.trim().replace(/\$\{(userHome|workspaceFolder|env:([^}]+))\}/g, (whole, name: string, envName?: string) => {
    if (envName !== undefined) return ctx.env[envName] ?? '';
    if (name === 'userHome') return ctx.home;
    return ctx.workspaceFolder ?? whole; // no folder open: left for the server to report
  });
  if (out === '~' || out.startsWith('~/')) out = ctx.home + out.slice(1);
  return out;
}

/**
 * The server's `codecomplete` section from a getter of codecomplete.* values (VS Code's
 * `WorkspaceConfiguration.get`). Empty paths are left out, so the server's own default applies
 * (its --checkpoint flag, $CODECOMPLETE_CHECKPOINT, models/default); so are unset values.
 */
export function serverSettings(get: (key: string) => unknown, ctx: PathContext): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of SERVER_KEYS) {
    let value = get(key);
    if (value === undefined || value === null) continue;
    if (PATH_KEYS.has(key) && typeof value === 'string') {
      value = expandPath(value, ctx);
      if (value === '') continue;
    }
    out[key] = value;
  }
  return out;
}

/** How to start the server: `codecomplete.server.*`. */
export interface LaunchSettings {
  command: string[];
  pythonPath: string;
}

export function launchSettings(get: (key: string) => unknown, ctx: PathContext): LaunchSettings {
  const command = get('server.command');
  const python = get('server.pythonPath');
  return {
    command: Array.isArray(command)
      ? command.filter((a): a is string => typeof a === 'string' && a !== '').map((a) => expandPath(a, ctx))
      : [],
    pythonPath: typeof python === 'string' ? expandPath(python, ctx) : '',
  };
}
