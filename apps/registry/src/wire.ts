/**
 * What the registry's clients and its service share beyond the .proto: request metadata keys.
 * (Light on purpose: the CLI's client commands import it without loading server code.)
 */

/**
 * Request metadata of RevokeAgent: `1` lets the registry revoke an agent id or serial it does not know
 * (re-issuing the revocations gateways kept after a restore from an older backup, docs/OPERATIONS.md, "Restoring an older revocation list":
 * the agent or certificate was made after the backup). Without it an unknown subject is `not_found`,
 * which catches a typo. It is not part of the signed body, and need not be: it can only turn that refusal
 * into the revocation the operator signed, an entry that only adds to the list.
 */
export const REVOKE_UNKNOWN_METADATA_KEY = 'parley-revoke-unknown';
