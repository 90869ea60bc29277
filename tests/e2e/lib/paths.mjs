import path from 'node:path';

/** <repo>/test-artifacts (gitignored): screenshots and server logs. */
export const repoRoot = path.resolve(import.meta.dirname, '../../..');
export const artifactsDir = process.env.TSUNAGI_ARTIFACTS || path.join(repoRoot, 'test-artifacts');
