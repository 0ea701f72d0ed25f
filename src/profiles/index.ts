import { ToolError } from '../core/errors.js';
import { coderProfile } from './coder.js';
import type { Profile } from './types.js';

const profiles: Record<string, Profile> = { coder: coderProfile };

/** Names of the built-in profiles. */
export const profileNames = Object.keys(profiles);

/** Looks up a built-in profile by name. */
export function getProfile(name: string): Profile {
  const profile = profiles[name];
  if (!profile) {
    throw new ToolError('INVALID_OPTION', `Unknown profile "${name}".`, { fix: `Use one of: ${profileNames.join(', ')}.` });
  }
  return profile;
}
