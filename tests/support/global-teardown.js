export default async function globalTeardown() {
  await globalThis.__insightsPrivacyServer?.stop();
  globalThis.__insightsPrivacyLog?.end();
}
