//! Bearer tokens of the Docker token flow: short-lived JWTs signed with Ed25519.
//!
//! The signing key is generated at first start and kept in the metadata database, so
//! that every replica signs and verifies with the same one; a key file an older Berth
//! left in the data directory (`token-signing-key.pem`) is imported instead, so tokens
//! issued before the upgrade stay valid. Verification accepts only EdDSA with this key,
//! this issuer and this audience (the `service`): `alg: none`, HMAC with the public key
//! and tokens for another service are refused by construction.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::password::random_bytes;
use crate::meta::accounts::Accounts;

pub const ISSUER: &str = "berth";
/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY: u64 = 5;
/// Where Berth kept the key before it moved into the metadata database.
const LEGACY_KEY_FILE: &str = "token-signing-key.pem";

/// One entry of the `access` claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub access: Vec<Access>,
    /// The user's id (a name can be deleted and created again).
    pub uid: i64,
    /// The access token the JWT was issued for, if any: revoking it revokes the JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<i64>,
}

pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    service: String,
    ttl: Duration,
}

pub struct Issued {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: SystemTime,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new random key, as PKCS#8 PEM.
pub fn generate_key_pem() -> anyhow::Result<String> {
    let key = SigningKey::from_bytes(&random_bytes::<32>());
    Ok(key
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the signing key")?
        .to_string())
}

/// The key file an older Berth kept in the data directory, if there is one: imported
/// into the database once, so tokens it signed stay valid across the upgrade.
pub fn legacy_key_pem(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join(LEGACY_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(pem) => {
            if let Err(e) = SigningKey::from_pkcs8_pem(&pem) {
                bail!(
                    "{} is not an Ed25519 PKCS#8 key ({e}); remove it to use the database's key",
                    path.display()
                );
            }
            Ok(Some(pem))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl Signer {
    /// The signer every process on this metadata database shares: the stored key, or
    /// (first start) the data directory's legacy key file, or a new key.
    pub async fn open(
        accounts: &dyn Accounts,
        data_dir: &Path,
        service: &str,
        ttl: Duration,
    ) -> anyhow::Result<Signer> {
        let candidate = match legacy_key_pem(data_dir)? {
            Some(pem) => pem,
            None => generate_key_pem()?,
        };
        let pem = accounts
            .signing_key(&candidate)
            .await
            .context("reading the token signing key from the metadata database")?;
        Signer::from_pem(&pem, service, ttl)
    }

    pub fn from_pem(pem: &str, service: &str, ttl: Duration) -> anyhow::Result<Signer> {
        let key = match SigningKey::from_pkcs8_pem(pem) {
            Ok(k) => k,
            Err(e) => bail!("the stored token signing key is not an Ed25519 PKCS#8 key ({e})"),
        };
        let private_pem = key.to_pkcs8_pem(LineEnding::LF)?;
        let public_pem = key.verifying_key().to_public_key_pem(LineEnding::LF)?;
        let kid = super::password::secret_hash(&public_pem)[..16].to_string();
        Ok(Signer {
            encoding: EncodingKey::from_ed_pem(private_pem.as_bytes())?,
            decoding: DecodingKey::from_ed_pem(public_pem.as_bytes())?,
            kid,
            service: service.to_string(),
            ttl,
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn issue(
        &self,
        sub: &str,
        uid: i64,
        tid: Option<i64>,
        access: Vec<Access>,
    ) -> anyhow::Result<Issued> {
        self.issue_at(now_secs(), sub, uid, tid, access)
    }

    fn issue_at(
        &self,
        now: u64,
        sub: &str,
        uid: i64,
        tid: Option<i64>,
        access: Vec<Access>,
    ) -> anyhow::Result<Issued> {
        let claims = Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: self.service.clone(),
            exp: now + self.ttl.as_secs(),
            nbf: now.saturating_sub(1),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
            uid,
            tid,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok(Issued {
            token,
            expires_in: self.ttl.as_secs(),
            issued_at: UNIX_EPOCH + Duration::from_secs(now),
        })
    }

    /// The claims of a valid token, or `None` for anything else (bad signature or
    /// algorithm, expired, wrong issuer or audience, malformed).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[&self.service]);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        v.validate_nbf = true;
        v.leeway = LEEWAY;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .ok()
            .map(|d| d.claims)
    }
}

/// Whether verified claims are still within their validity period, with the leeway
/// [`Signer::verify`] allows (for claims verified earlier and cached).
pub fn in_validity(c: &Claims) -> bool {
    let now = now_secs();
    c.exp + LEEWAY >= now && c.nbf <= now + LEEWAY
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn signer(pem: &str, service: &str, ttl: u64) -> Signer {
        Signer::from_pem(pem, service, Duration::from_secs(ttl)).unwrap()
    }

    fn key() -> String {
        generate_key_pem().unwrap()
    }

    #[test]
    fn issues_and_verifies_and_keeps_its_key() {
        let pem = key();
        let s = signer(&pem, "berth", 300);
        let access = vec![Access {
            kind: "repository".into(),
            name: "alice/app".into(),
            actions: vec!["pull".into()],
        }];
        let t = s.issue("alice", 7, None, access.clone()).unwrap();
        let c = s.verify(&t.token).unwrap();
        assert_eq!((c.sub.as_str(), c.uid, c.access), ("alice", 7, access));
        // Same key after a restart.
        assert!(signer(&pem, "berth", 300).verify(&t.token).is_some());
        // Another service (audience) refuses it.
        assert!(signer(&pem, "other", 300).verify(&t.token).is_none());
        // Another key refuses it.
        assert!(signer(&key(), "berth", 300).verify(&t.token).is_none());
    }

    #[test]
    fn refuses_tampered_and_unsigned_tokens() {
        let s = signer(&key(), "berth", 300);
        let t = s.issue("alice", 7, None, vec![]).unwrap().token;
        let parts: Vec<&str> = t.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = "root".into();
        let forged = b64.encode(claims.to_string());
        assert!(s
            .verify(&format!("{}.{}.{}", parts[0], forged, parts[2]))
            .is_none());
        let none_header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(s.verify(&format!("{none_header}.{}.", parts[1])).is_none());
        let hs_header = b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        assert!(s
            .verify(&format!("{hs_header}.{}.{}", parts[1], parts[2]))
            .is_none());
        assert!(s.verify("garbage").is_none());
    }

    #[test]
    fn tokens_for_another_service_are_refused() {
        let pem = key();
        let ours = signer(&pem, "berth", 300);
        // Same key, another audience.
        let theirs = signer(&pem, "other-registry", 300);
        let t = theirs.issue("alice", 7, None, vec![]).unwrap().token;
        assert!(theirs.verify(&t).is_some());
        assert!(ours.verify(&t).is_none(), "a token for another service");
    }

    #[test]
    fn expired_tokens_are_refused() {
        let s = signer(&key(), "berth", 300);
        let old = s
            .issue_at(now_secs() - 3600, "alice", 7, None, vec![])
            .unwrap()
            .token;
        assert!(s.verify(&old).is_none());
        let fresh = s
            .issue_at(now_secs(), "alice", 7, None, vec![])
            .unwrap()
            .token;
        assert!(s.verify(&fresh).is_some());
    }

    #[test]
    fn a_legacy_key_file_is_read_and_a_broken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(legacy_key_pem(dir.path()).unwrap().is_none());
        let pem = key();
        std::fs::write(dir.path().join(LEGACY_KEY_FILE), &pem).unwrap();
        assert_eq!(
            legacy_key_pem(dir.path()).unwrap().as_deref(),
            Some(pem.as_str())
        );
        std::fs::write(dir.path().join(LEGACY_KEY_FILE), "junk").unwrap();
        assert!(legacy_key_pem(dir.path()).is_err());
    }
}
