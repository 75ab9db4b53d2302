/** The memory store's quotas and logger: the settings every part of the store reads. */
import { MAX_EPOCHS, MAX_MEMBERS } from '@parley/memory';

/** Quotas of one memory and of one owner (all its memories). */
export interface MemoryQuotas {
  /** Ciphertext bytes of one memory's current segment versions. Default 64 MiB. */
  readonly maxBytesPerMemory: number;
  /** Segments of one memory. Default 10 000. */
  readonly maxSegmentsPerMemory: number;
  /** Ciphertext bytes of all of one owner's memories. Default 256 MiB. */
  readonly maxBytesPerOwner: number;
  /** Segments of all of one owner's memories. Default 100 000. */
  readonly maxSegmentsPerOwner: number;
  /** Memories one agent may own. Default 1000. */
  readonly maxMemoriesPerOwner: number;
  /** Members of one memory (owner and expired grants included), at most 256. Default 256. */
  readonly maxMembersPerMemory: number;
  /**
   * Key epochs one memory keeps that stored segments still use, at most 4096. Default 4096. Only a
   * rotation nobody needed counts against it: a REVOKE's epoch and a required rotation are always accepted (§18.5).
   */
  readonly maxEpochsPerMemory: number;
}

export const DEFAULT_MEMORY_QUOTAS: MemoryQuotas = Object.freeze({
  maxBytesPerMemory: 64 * 1024 * 1024,
  maxSegmentsPerMemory: 10_000,
  maxBytesPerOwner: 256 * 1024 * 1024,
  maxSegmentsPerOwner: 100_000,
  maxMemoriesPerOwner: 1000,
  maxMembersPerMemory: MAX_MEMBERS,
  maxEpochsPerMemory: MAX_EPOCHS,
});

/** The logging calls the store makes (pino's Logger fits). Never given key material or data. */
export interface MemoryLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}
