// Generate a signing key pair with jose, as a Node backend would, and export it
// in the forms an admin pastes: the public key as SPKI PEM and as a JWK.
//
//   node jose_keypair.mjs ES256|EdDSA
//     -> {"private_pem": "<PKCS#8>", "public_pem": "<SPKI>", "jwk": {...}, "thumbprint": "..."}
//
// ES256: EC P-256; EdDSA: Ed25519. The thumbprint is jose's RFC 7638 one.
import {
  calculateJwkThumbprint,
  exportJWK,
  exportPKCS8,
  exportSPKI,
  generateKeyPair,
} from "jose";

const alg = process.argv[2];
if (alg !== "ES256" && alg !== "EdDSA") throw new Error(`alg must be ES256 or EdDSA, not ${alg}`);
const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
const jwk = await exportJWK(publicKey);
process.stdout.write(
  JSON.stringify({
    private_pem: await exportPKCS8(privateKey),
    public_pem: await exportSPKI(publicKey),
    jwk,
    thumbprint: await calculateJwkThumbprint(jwk, "sha256"),
  }) + "\n",
);
