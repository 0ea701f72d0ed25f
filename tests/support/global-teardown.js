import { rm } from 'node:fs/promises';

export default async function globalTeardown() {
  await globalThis.__insightsPrivacyServer?.stop();
  globalThis.__insightsPrivacyLog?.end();
  if (globalThis.__insightsPrivacyEmptyFolder) await rm(globalThis.__insightsPrivacyEmptyFolder, { recursive: true, force: true });
}
