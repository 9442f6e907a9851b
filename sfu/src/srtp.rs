//! SRTP for the packets the worker forwards, outside webrtc-rs's pipeline.
//!
//! webrtc-rs 0.21 runs every packet written to a subscriber through its
//! handler and interceptor chain and allocates on the way; the keys it
//! derives from DTLS stay inside its DTLS handler. It does take a crypto
//! provider per connection, and the SRTP key derivation (RFC 3711 §4.3)
//! calls the provider's `block_encrypt` with the master key, on a block
//! that holds the master salt. `KeyTap` wraps the provider and notes those
//! calls, so the worker learns the master keys and protects forwarded
//! packets itself, in place, in pooled buffers (`SrtpSender`).
//!
//! What the tap relies on, checked by the tests against rtc-srtp itself:
//! each context's key derivation starts with the encryption key (label 0,
//! block 0), and webrtc-rs makes the local (sending) context before the
//! remote one. The AES-CM profile makes AES-CTR ciphers and the GCM profile
//! does not, which tells the two apart; DTLS itself never uses AES-CTR.

use bytes::BytesMut;
use rtc::crypto::{
    AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher, CryptoAlgorithm,
    CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac, PublicKey, RTCCrypto,
    RTCCryptoProvider, RTCRandom, SignatureScheme, SigningKey, StreamCipher, StreamCipherAlgorithm,
};
use std::sync::{Arc, Mutex};

/// The SRTP profiles Salon offers, the two every browser has: AES-GCM
/// first (cheaper per byte on x86 with AES-NI), AES-CM with HMAC-SHA1 for
/// the rest.
pub fn offered_profiles() -> Vec<rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile> {
    use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile as P;
    vec![P::Srtp_Aead_Aes_128_Gcm, P::Srtp_Aes128_Cm_Hmac_Sha1_80]
}

#[derive(Debug, thiserror::Error)]
pub enum SrtpError {
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    #[error("the packet does not fit its buffer")]
    TooLong,
}

/// The profile of a session, as far as the sender is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// AEAD_AES_128_GCM (RFC 7714): 12-byte salt, 16-byte tag.
    AeadAes128Gcm,
    /// AES_CM_128_HMAC_SHA1_80 (RFC 3711): 14-byte salt, 10-byte tag.
    Aes128CmHmacSha1_80,
}

impl Profile {
    pub fn salt_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm => 12,
            Self::Aes128CmHmacSha1_80 => 14,
        }
    }

    pub fn tag_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm => 16,
            Self::Aes128CmHmacSha1_80 => 10,
        }
    }
}

const LABEL_ENCRYPTION: u8 = 0x00;
const LABEL_AUTHENTICATION: u8 = 0x01;
const LABEL_SALT: u8 = 0x02;
const KEY_LEN: usize = 16;

/// A master key as the key derivation saw it: the key, and its first
/// input block (the master salt, with the block counter in the last bytes).
#[derive(Clone)]
struct Master {
    key: [u8; KEY_LEN],
    block: [u8; 16],
}

#[derive(Default)]
struct Seen {
    /// Distinct master keys in the order the key derivation used them.
    masters: Vec<Master>,
    ctr: bool,
}

/// A crypto provider for one connection that passes everything to
/// webrtc-rs's own and notes the SRTP master keys on the way.
pub struct KeyTap {
    inner: Arc<dyn RTCCryptoProvider>,
    /// Written during the DTLS handshake and read once after it, never per packet.
    seen: Mutex<Seen>,
}

impl KeyTap {
    pub fn new(inner: Arc<dyn RTCCryptoProvider>) -> Self {
        Self {
            inner,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// A sender with the keys of the connection's last completed key
    /// derivation (the local side's), if there was one this tap understood.
    pub fn sender(&self) -> Option<SrtpSender> {
        let seen = self.seen.lock().ok()?;
        let pairs = seen.masters.len() / 2;
        let local = seen.masters.get(pairs.checked_sub(1)? * 2)?;
        let profile = if seen.ctr {
            Profile::Aes128CmHmacSha1_80
        } else {
            Profile::AeadAes128Gcm
        };
        let salt = &local.block[..profile.salt_len()];
        SrtpSender::new(profile, &local.key, salt, self.inner.crypto()).ok()
    }

    fn note_block(&self, algorithm: BlockCipherAlgorithm, key: &[u8], block: &[u8]) {
        if algorithm != BlockCipherAlgorithm::Aes128 {
            return;
        }
        let (Ok(key), Ok(block)) = (<[u8; KEY_LEN]>::try_from(key), <[u8; 16]>::try_from(block))
        else {
            return;
        };
        if let Ok(mut seen) = self.seen.lock()
            && !seen.masters.iter().any(|m| m.key == key)
        {
            seen.masters.push(Master { key, block });
        }
    }
}

impl RTCCryptoProvider for KeyTap {
    fn name(&self) -> &'static str {
        "salon-key-tap"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        self
    }

    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

impl RTCCrypto for KeyTap {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.note_block(algorithm, key, block);
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.ctr = true;
        }
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.inner.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn rtc::crypto::ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
}

/// RFC 3711 §4.3.3's key derivation with a key derivation rate of 0, as
/// DTLS-SRTP has it (RFC 5764).
fn derive(
    crypto: &dyn RTCCrypto,
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = [0u8; 16];
        block[..master_salt.len()].copy_from_slice(master_salt);
        block[7] ^= label;
        block[14..].copy_from_slice(&(i as u16).to_be_bytes());
        crypto.block_encrypt(BlockCipherAlgorithm::Aes128, master_key, &mut block)?;
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(())
}

enum Cipher {
    Gcm {
        aead: Box<dyn AeadCipher>,
        salt: [u8; 12],
    },
    CmSha1 {
        ctr: Box<dyn StreamCipher>,
        mac: Box<dyn Mac>,
        salt: [u8; 14],
    },
}

/// Protects the RTP packets one connection sends. Keyed once; protecting a
/// packet allocates nothing.
pub struct SrtpSender {
    profile: Profile,
    cipher: Cipher,
}

impl SrtpSender {
    pub fn new(
        profile: Profile,
        master_key: &[u8],
        master_salt: &[u8],
        crypto: &dyn RTCCrypto,
    ) -> Result<Self, SrtpError> {
        let mut key = [0u8; KEY_LEN];
        derive(crypto, master_key, master_salt, LABEL_ENCRYPTION, &mut key)?;
        let cipher = match profile {
            Profile::AeadAes128Gcm => {
                let mut salt = [0u8; 12];
                derive(crypto, master_key, master_salt, LABEL_SALT, &mut salt)?;
                Cipher::Gcm {
                    aead: crypto.new_aead(AeadAlgorithm::Aes128Gcm, &key)?,
                    salt,
                }
            }
            Profile::Aes128CmHmacSha1_80 => {
                let mut salt = [0u8; 14];
                derive(crypto, master_key, master_salt, LABEL_SALT, &mut salt)?;
                let mut auth = [0u8; 20];
                derive(
                    crypto,
                    master_key,
                    master_salt,
                    LABEL_AUTHENTICATION,
                    &mut auth,
                )?;
                Cipher::CmSha1 {
                    ctr: crypto.new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, &key)?,
                    mac: crypto.new_hmac(HmacAlgorithm::Sha1, &auth)?,
                    salt,
                }
            }
        };
        Ok(Self { profile, cipher })
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Protects the RTP packet in `packet` (a header of `header_len` bytes,
    /// then the payload) in place and appends its tag. `roc` is the
    /// stream's rollover counter for this packet's sequence number.
    pub fn protect(
        &mut self,
        packet: &mut BytesMut,
        header_len: usize,
        ssrc: u32,
        roc: u32,
        sequence: u16,
    ) -> Result<(), SrtpError> {
        if packet.len() < header_len {
            return Err(SrtpError::TooLong);
        }
        let body = packet.len();
        // Within capacity (pooled buffers are sized for it) this allocates nothing.
        packet.resize(body + self.profile.tag_len(), 0);
        let (head, rest) = packet.split_at_mut(header_len);
        let (payload, tag) = rest.split_at_mut(body - header_len);
        match &mut self.cipher {
            Cipher::Gcm { aead, salt } => {
                // RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, XOR the session salt.
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
                iv[6..10].copy_from_slice(&roc.to_be_bytes());
                iv[10..12].copy_from_slice(&sequence.to_be_bytes());
                for (b, s) in iv.iter_mut().zip(salt.iter()) {
                    *b ^= s;
                }
                aead.seal_in_place(&iv, head, payload, tag)?;
            }
            Cipher::CmSha1 { ctr, mac, salt } => {
                // RFC 3711 §4.1.1: salt·2^16 XOR SSRC·2^64 XOR index·2^16.
                let mut iv = [0u8; 16];
                iv[..14].copy_from_slice(salt);
                for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
                    *b ^= s;
                }
                for (b, s) in iv[8..12].iter_mut().zip(roc.to_be_bytes()) {
                    *b ^= s;
                }
                for (b, s) in iv[12..14].iter_mut().zip(sequence.to_be_bytes()) {
                    *b ^= s;
                }
                ctr.apply_keystream(&iv, payload)?;
                let mut full = [0u8; 20];
                mac.sign(&[head, payload, &roc.to_be_bytes()], &mut full)?;
                tag.copy_from_slice(&full[..tag.len()]);
            }
        }
        Ok(())
    }
}

/// The rollover counter of one stream we send (RFC 3711 §3.3.1): the
/// sequence numbers we send only go forward, but a retransmission may
/// reach back across a wrap.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rollover {
    roc: u32,
    highest: u16,
    started: bool,
}

impl Rollover {
    /// The counter for `sequence`, noting it as sent.
    pub fn send(&mut self, sequence: u16) -> u32 {
        if !self.started {
            self.started = true;
            self.highest = sequence;
            return self.roc;
        }
        let roc = self.of(sequence);
        if roc > self.roc || (roc == self.roc && sequence > self.highest) {
            self.roc = roc;
            self.highest = sequence;
        }
        roc
    }

    /// The counter of an already sent `sequence`.
    pub fn of(&self, sequence: u16) -> u32 {
        let diff = sequence.wrapping_sub(self.highest) as i16;
        if diff >= 0 {
            // At or ahead of the highest: wrapped if the number went down.
            if sequence < self.highest {
                self.roc.wrapping_add(1)
            } else {
                self.roc
            }
        } else if sequence > self.highest {
            // Behind the highest, from before the last wrap.
            self.roc.wrapping_sub(1)
        } else {
            self.roc
        }
    }
}

#[cfg(test)]
#[path = "srtp_tests.rs"]
mod tests;
