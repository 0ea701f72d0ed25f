import { readFileSync } from 'node:fs';

/** The tool's version from package.json; recorded with every apply so that status can tell which version installed the SQL. */
export const toolVersion: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
