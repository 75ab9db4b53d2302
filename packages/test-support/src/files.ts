/** Temporary directories for tests. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A temporary directory. */
export interface TempDir {
  readonly path: string;
  /** Removes it and everything in it. */
  remove(): void;
}

/** A new temporary directory `parley-<prefix>-XXXXXX` under the OS temp directory. */
export function tempDir(prefix: string): TempDir {
  const path = mkdtempSync(join(tmpdir(), `parley-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}
