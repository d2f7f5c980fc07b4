// Sign a token with jose's SignJWT (HS256 with a secret; RS256, ES256 or EdDSA with a
// private key PEM).
//
//   node jose_sign.mjs < '{"alg": "HS256"|"RS256"|"ES256"|"EdDSA", "key": "<secret or PEM>",
//                          "claims": {...}, "header": {...}, "expiresIn": "1h"}'
//
// The private key may be PKCS#8 (openssl genrsa, jose_keypair.mjs) or PKCS#1
// (ssh-keygen -m PEM).
// Prints the token on one line.
import { createPrivateKey } from "node:crypto";
import { SignJWT } from "jose";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const key =
  input.alg === "HS256" ? new TextEncoder().encode(input.key) : createPrivateKey(input.key);
const token = await new SignJWT(input.claims ?? {})
  .setProtectedHeader({ alg: input.alg, typ: "JWT", ...(input.header ?? {}) })
  .setIssuedAt()
  .setExpirationTime(input.expiresIn ?? "1h")
  .sign(key);
process.stdout.write(token + "\n");
