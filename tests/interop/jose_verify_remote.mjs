// Verify tokens the way a hosted chat does: jose's createRemoteJWKSet on the
// site's published JWKS URL, then jwtVerify.
//
//   node jose_verify_remote.mjs < '[{"jwks_url": "http://127.0.0.1:PORT/.well-known/chat-security/ios/jwks.json",
//                                   "token": "<jwt>", "issuer": "...", "audience": "..."}, ...]'
//
// Prints one JSON array, a result per check, in order:
//   {"valid": true, "sub": ..., "kid": ..., "alg": ...}  or  {"valid": false, "code": "ERR_..."}
// Exits 0 either way (a refusal is a result); anything else is a crash (exit 1).
import { createRemoteJWKSet, jwtVerify } from "jose";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const checks = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const sets = new Map(); // one remote set per URL, as a verifier keeps it
const results = [];
for (const check of checks) {
  if (!sets.has(check.jwks_url)) sets.set(check.jwks_url, createRemoteJWKSet(new URL(check.jwks_url)));
  const options = {};
  if (check.issuer) options.issuer = check.issuer;
  if (check.audience) options.audience = check.audience;
  try {
    const { payload, protectedHeader } = await jwtVerify(check.token, sets.get(check.jwks_url), options);
    results.push({ valid: true, sub: payload.sub, kid: protectedHeader.kid, alg: protectedHeader.alg });
  } catch (err) {
    if (typeof err?.code !== "string" || !err.code.startsWith("ERR_J")) throw err;
    results.push({ valid: false, code: err.code });
  }
}
process.stdout.write(JSON.stringify(results) + "\n");
