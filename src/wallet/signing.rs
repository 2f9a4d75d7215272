//! Client keys and request signatures: Ed25519 through the vetted `ring` crate.
//!
//! A client's id is derived from its public key ([`PublicKey::client_id`]), so a signed
//! request cannot claim another client's id; [`crate::wallet::Request::verify`] checks
//! the id and the signature.

use super::{Request, RequestAuth, TEXT_CLIENT_BIT};
use crate::hash::{base64, unbase64, Sha256};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::fmt;

/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;

/// Bytes of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// Domain separation of the client-id derivation.
const CLIENT_ID_DOMAIN: &[u8] = b"fba-client-id\0";

/// An Ed25519 public key: who signed a request. JSON: standard padded base64 of the 32
/// bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey([u8; PUBLIC_KEY_BYTES]);

/// An Ed25519 signature. JSON: standard padded base64 of the 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Signature([u8; SIGNATURE_BYTES]);

impl PublicKey {
    /// The key of these bytes (any 32 bytes; whether they are a valid curve point is
    /// found out when a signature is verified).
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_BYTES]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        &self.0
    }

    /// The client id of this key: the first 8 bytes of
    /// `SHA-256("fba-client-id\0" ‖ key)`, big-endian, with the top bit
    /// ([`TEXT_CLIENT_BIT`]) cleared.
    pub fn client_id(&self) -> u64 {
        let digest = Sha256::new().update(CLIENT_ID_DOMAIN).update(&self.0).finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) & !TEXT_CLIENT_BIT
    }
}

impl Signature {
    /// The signature of these bytes.
    pub fn from_bytes(bytes: [u8; SIGNATURE_BYTES]) -> Signature {
        Signature(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_BYTES] {
        &self.0
    }
}

/// Decodes base64 of exactly `N` bytes.
fn decode_fixed<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], EncodingError> {
    let bytes = unbase64(text).ok_or(EncodingError { what, bytes: N })?;
    bytes.try_into().map_err(|_| EncodingError { what, bytes: N })
}

impl TryFrom<String> for PublicKey {
    type Error = EncodingError;

    fn try_from(text: String) -> Result<PublicKey, EncodingError> {
        decode_fixed(&text, "public key").map(PublicKey)
    }
}

impl TryFrom<String> for Signature {
    type Error = EncodingError;

    fn try_from(text: String) -> Result<Signature, EncodingError> {
        decode_fixed(&text, "signature").map(Signature)
    }
}

impl From<PublicKey> for String {
    fn from(key: PublicKey) -> String {
        base64(&key.0)
    }
}

impl From<Signature> for String {
    fn from(sig: Signature) -> String {
        base64(&sig.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", base64(&self.0))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64(&self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", base64(&self.0))
    }
}

/// Text that is not the canonical base64 of a key or signature of the right length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodingError {
    /// What was expected: `"public key"` or `"signature"`.
    pub what: &'static str,
    /// Its length in bytes.
    pub bytes: usize,
}

impl fmt::Display for EncodingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected the padded base64 of a {}-byte {}", self.bytes, self.what)
    }
}

impl std::error::Error for EncodingError {}

/// Why a request's signature is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// The request carries no [`RequestAuth`].
    Unsigned,
    /// The request's client id is not the id of the key that signed it.
    WrongClient {
        /// The id the request claims.
        client: u64,
        /// The id of its key.
        key_client: u64,
    },
    /// The signature does not verify under the key (forged, or the request was altered).
    BadSignature,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Unsigned => {
                f.write_str("the request is not signed (sign it with a client key: fba_client keygen)")
            }
            SignatureError::WrongClient { client, key_client } => {
                write!(f, "client id {client} is not the id of the signing key ({key_client})")
            }
            SignatureError::BadSignature => f.write_str("the signature does not verify"),
        }
    }
}

impl std::error::Error for SignatureError {}

/// Why a client key could not be made or read.
#[derive(Debug)]
pub enum KeyError {
    /// The system random generator failed.
    Generate,
    /// The bytes are not a PKCS#8 (v2) Ed25519 key document.
    Rejected(ring::error::KeyRejected),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Generate => f.write_str("cannot generate a key: the system random generator failed"),
            KeyError::Rejected(e) => write!(f, "not an Ed25519 PKCS#8 v2 key: {e}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A client's Ed25519 key pair: signs its requests, and names it (its client id is
/// [`PublicKey::client_id`] of the public key).
pub struct ClientKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl ClientKey {
    /// A fresh key from the system random generator, and its PKCS#8 v2 document (83
    /// bytes; what [`ClientKey::from_pkcs8`] reads back; keep it secret).
    pub fn generate() -> Result<(ClientKey, Vec<u8>), KeyError> {
        let document =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        let pkcs8 = document.as_ref().to_vec();
        Ok((ClientKey::from_pkcs8(&pkcs8)?, pkcs8))
    }

    /// The key in a PKCS#8 v2 document (as [`ClientKey::generate`] writes it).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<ClientKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(KeyError::Rejected)?;
        let mut public = [0u8; PUBLIC_KEY_BYTES];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(ClientKey { pair, public: PublicKey(public) })
    }

    /// The client id this key signs as.
    pub fn client_id(&self) -> u64 {
        self.public.client_id()
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// `request` signed in this key's name: its `client` becomes [`ClientKey::client_id`]
    /// and its `auth` this key and the signature of [`Request::signed_bytes`].
    pub fn sign(&self, mut request: Request) -> Request {
        request.client = self.client_id();
        let signature = self.pair.sign(&request.signed_bytes());
        let mut sig = [0u8; SIGNATURE_BYTES];
        sig.copy_from_slice(signature.as_ref());
        request.auth = Some(RequestAuth { key: self.public, sig: Signature(sig) });
        request
    }
}

impl fmt::Debug for ClientKey {
    /// The public half only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey {{ client: {}, public: {} }}", self.client_id(), self.public)
    }
}

/// Verifies `sig` over `message` under `key` (Ed25519, `ring`).
pub(crate) fn verify(key: &PublicKey, message: &[u8], sig: &Signature) -> Result<(), SignatureError> {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.as_bytes())
        .verify(message, sig.as_bytes())
        .map_err(|_| SignatureError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256;
    use crate::wallet::testing::*;

    fn signed(key: &ClientKey) -> Request {
        key.sign(Request::new(0, 3, deposit("foo", "5")).with_session(9))
    }

    #[test]
    fn a_signed_request_verifies_and_round_trips_through_json() {
        let (key, pkcs8) = ClientKey::generate().unwrap();
        let request = signed(&key);
        assert_eq!(request.client, key.client_id());
        assert_eq!(request.verify(), Ok(()));
        let json = serde_json::to_string(&request).unwrap();
        let back: Request = serde_json::from_str(&json).unwrap();
        assert_eq!(back, request);
        assert_eq!(back.verify(), Ok(()));
        let again = ClientKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!((again.public_key(), again.client_id()), (key.public_key(), key.client_id()));
        assert_eq!(
            again.sign(Request::new(5, 3, deposit("foo", "5")).with_session(9)),
            request,
            "Ed25519 is deterministic"
        );
    }

    #[test]
    fn altered_requests_are_refused() {
        let (key, _) = ClientKey::generate().unwrap();
        let request = signed(&key);
        let mut altered = vec![];
        let mut r = request.clone();
        r.op = deposit("foo", "500");
        altered.push(r);
        let mut r = request.clone();
        r.seq += 1;
        altered.push(r);
        let mut r = request.clone();
        r.session += 1;
        altered.push(r);
        let mut r = request.clone();
        let auth = r.auth.as_mut().unwrap();
        auth.sig.0[17] ^= 1;
        altered.push(r);
        for r in &altered {
            assert_eq!(r.verify(), Err(SignatureError::BadSignature), "{r:?}");
        }
        // Another key's signature on the same fields, claiming the first client.
        let (other, _) = ClientKey::generate().unwrap();
        let mut r = other.sign(request.clone());
        r.client = request.client;
        let key_client = other.client_id();
        assert_eq!(r.verify(), Err(SignatureError::WrongClient { client: request.client, key_client }));
        // The first key with its id, but the second key's signature.
        let mut r = request.clone();
        r.auth.as_mut().unwrap().sig = other.sign(request.clone()).auth.unwrap().sig;
        assert_eq!(r.verify(), Err(SignatureError::BadSignature));
        let mut r = request.clone();
        r.auth = None;
        assert_eq!(r.verify(), Err(SignatureError::Unsigned));
        let mut r = request;
        r.client ^= 1;
        assert!(matches!(r.verify(), Err(SignatureError::WrongClient { .. })));
    }

    #[test]
    fn client_ids_derive_from_the_key_with_the_top_bit_clear() {
        let key = PublicKey::from_bytes([7; PUBLIC_KEY_BYTES]);
        let mut input = CLIENT_ID_DOMAIN.to_vec();
        input.extend_from_slice(&[7; PUBLIC_KEY_BYTES]);
        let digest = sha256(&input);
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap()) & (u64::MAX >> 1);
        assert_eq!(key.client_id(), expected);
        for byte in 0..=255u8 {
            assert_eq!(PublicKey::from_bytes([byte; 32]).client_id() & TEXT_CLIENT_BIT, 0);
        }
    }

    #[test]
    fn keys_and_signatures_are_canonical_base64_of_the_right_length() {
        let key = PublicKey::from_bytes([0xab; PUBLIC_KEY_BYTES]);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{}\"", base64(&[0xab; 32])));
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
        let short = format!("\"{}\"", base64(&[0xab; 31]));
        assert!(serde_json::from_str::<PublicKey>(&short).is_err());
        let sig = format!("\"{}\"", base64(&[1; 64]));
        assert_eq!(serde_json::from_str::<Signature>(&sig).unwrap(), Signature([1; 64]));
        assert!(serde_json::from_str::<Signature>(&format!("\"{}\"", base64(&[1; 65]))).is_err());
        // 32 bytes end in one pad character; a non-zero padding bit is another encoding.
        let canonical = base64(&[0; 32]);
        let mut twisted = canonical.clone().into_bytes();
        twisted[42] = b'B';
        let twisted = String::from_utf8(twisted).unwrap();
        assert!(PublicKey::try_from(twisted).is_err());
        assert!(PublicKey::try_from(canonical).is_ok());
        assert_eq!(
            PublicKey::try_from("!".to_string()).unwrap_err().to_string(),
            "expected the padded base64 of a 32-byte public key"
        );
    }

    #[test]
    fn a_bad_key_document_is_refused_with_a_reason() {
        let err = ClientKey::from_pkcs8(b"not a key").unwrap_err();
        assert!(err.to_string().starts_with("not an Ed25519 PKCS#8 v2 key"), "{err}");
        let (key, _) = ClientKey::generate().unwrap();
        assert!(format!("{key:?}").contains(&key.public_key().to_string()));
    }
}
