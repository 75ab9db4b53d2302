/**
 * Secret files (keys, tokens, TLS private keys) written the way every Parley program writes them: whole or
 * not at all, mode 0600, and — unless asked to overwrite — never replacing a file another writer put there.
 */
import { chmodSync, closeSync, fsyncSync, linkSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { threadId } from 'node:worker_threads';
import { basename, dirname, join } from 'node:path';

/** Temporary files made by this thread: with the pid, thread and time, a name no other writer uses. */
let tmpFiles = 0;

/**
 * Writes text to `path` with mode 0600 via a temporary file in the same directory, fsync, then a hard link (a
 * new file: fails atomically with EEXIST when `path` exists, so of two writers racing exactly one wins) or a
 * rename (`overwrite`), and an fsync of the directory (so the new name survives a crash). The temporary file
 * is always removed: no partial secret is left behind.
 * @throws the EEXIST error of the link when `path` exists and `overwrite` is not set; any other I/O error
 */
export function writeSecretFile(path: string, text: string, options: { readonly overwrite?: boolean } = {}): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${threadId}.${Date.now()}.${++tmpFiles}.tmp`);
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(tmp, 0o600); // the umask can only narrow the mode; this pins it on platforms that ignore it
    if (options.overwrite === true) renameSync(tmp, path);
    else linkSync(tmp, path);
  } finally {
    try {
      unlinkSync(tmp); // after a link: the file stays under `path`
    } catch {
      // already gone (renamed)
    }
  }
  syncDirectory(dir);
}

/** Renames `from` to `to` and fsyncs the directory, so the new name is durable. */
export function renameDurably(from: string, to: string): void {
  renameSync(from, to);
  syncDirectory(dirname(to));
}

function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some platforms (Windows) cannot open or fsync a directory; the rename or link is still atomic there.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
