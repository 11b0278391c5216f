//! RFC 3161 time-stamping: the request the anchor sends, and the checks of a response and
//! of a stored token (the anchor before it keeps a receipt, `acectl audit` on every one).
//!
//! A token is a CMS SignedData (RFC 5652) over a TSTInfo. It is accepted only if its
//! message imprint is SHA-256 of the data, its nonce is the request's, its signed
//! attributes bind the TSTInfo (content type and message digest), the signature over them
//! verifies with the signer certificate's key (RSA PKCS#1 v1.5 or ECDSA P-256/P-384), that
//! certificate is for time-stamping (extended key usage), was valid at the stamped time,
//! and is a trusted certificate or is signed by one. Nothing is fetched: no AIA, no
//! OCSP/CRL.

use std::fmt::Write as _;

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{BitString, Int, ObjectIdentifier, OctetString};
use der::{
    Any, Decode, DecodePem, DecodeValue, Encode, EncodeValue, FixedTag, Header, Length, Reader,
    Sequence, Tag, Writer,
};
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectKeyIdentifier};
use x509_cert::ext::Extensions;
use x509_cert::spki::AlgorithmIdentifier;
use x509_cert::Certificate;
use x509_tsp::{Accuracy, MessageImprint, TimeStampReq, TspVersion};

const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ID_SHA384_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const ID_SHA512_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const ID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const ID_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_AA_SIGNING_CERTIFICATE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.12");
const ID_AA_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");

/// Why a request could not be made, or a response or token was refused. Every variant
/// but [`TsaError::Status`] and [`TsaError::NoToken`] means the token proves nothing (the
/// anchor keeps no receipt; the audit reports a mismatch); those two are the TSA declining
/// to stamp, which a later request may not repeat.
#[derive(Debug, thiserror::Error)]
pub enum TsaError {
    /// Bytes that do not decode as the structure named.
    #[error("{what} is not valid DER: {reason}")]
    Der { what: &'static str, reason: String },
    /// The configured PEM text (not a token): no certificates, or not PEM.
    #[error("TSA trust certificates: {0}")]
    Trust(String),
    /// The TSA did not grant the request (PKIStatus other than 0 or 1).
    #[error("TSA answered status {name} ({status}){status_string}{fail_info}")]
    Status {
        status: u32,
        name: &'static str,
        /// `": text; text"` from statusString, or empty.
        status_string: String,
        /// `", failInfo badAlg, …"`, or empty.
        fail_info: String,
    },
    /// Status granted, but no timeStampToken in the response.
    #[error("TSA answered status {0} without a time-stamp token")]
    NoToken(&'static str),
    /// Not a CMS SignedData over a TSTInfo with one signer.
    #[error("the token is not {0}")]
    Shape(String),
    /// The token stamps other data (or the same data hashed otherwise).
    #[error("message imprint is {found}, expected {expected}")]
    Imprint { expected: String, found: String },
    /// A replayed or misdirected answer.
    #[error("nonce {found} in the token, {expected} in the request")]
    Nonce { expected: String, found: String },
    /// The signer certificate is neither in the token nor among the trust certificates.
    #[error("signer certificate ({0}) is neither in the token nor a trust certificate")]
    SignerMissing(String),
    /// signedAttrs absent, or not binding the TSTInfo.
    #[error("signedAttrs: {0}")]
    Attributes(String),
    /// The signature over signedAttrs, as named.
    #[error("signature over signedAttrs {0}")]
    Signature(String),
    #[error("signer certificate has no extended key usage id-kp-timeStamping (subject {0})")]
    NotTimeStamping(String),
    #[error(
        "genTime {gen_time} is outside the signer certificate's validity {not_before} to \
         {not_after} (subject {subject})"
    )]
    Validity {
        gen_time: String,
        not_before: String,
        not_after: String,
        subject: String,
    },
    #[error(
        "signer certificate is not signed by any configured TSA trust certificate (subject \
         {subject}, issuer {issuer}; trusted: {trusted}){tried}"
    )]
    Untrusted {
        subject: String,
        issuer: String,
        trusted: String,
        /// `"; <trusted subject>: <why its key did not verify>"` per same-named issuer.
        tried: String,
    },
}

fn der_err(what: &'static str) -> impl Fn(der::Error) -> TsaError {
    move |e| TsaError::Der {
        what,
        reason: e.to_string(),
    }
}

/// A request as sent, with what its answer must repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsaRequest {
    pub der: Vec<u8>,
    pub nonce: u64,
    pub imprint: [u8; 32],
}

/// A TimeStampReq v1 over SHA-256 of `data`, with `nonce`, asking for the TSA's
/// certificate in the token (so that the token verifies on its own with the trust roots).
///
/// # Errors
/// Only if DER encoding fails, which these fixed-size fields cannot make it do.
pub fn request(data: &[u8], nonce: u64) -> Result<TsaRequest, TsaError> {
    let imprint: [u8; 32] = Sha256::digest(data).into();
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: AlgorithmIdentifier {
                oid: ID_SHA256,
                parameters: Some(Any::null()),
            },
            hashed_message: OctetString::new(imprint.to_vec()).map_err(der_err("the imprint"))?,
        },
        req_policy: None,
        nonce: Some(nonce_int(nonce)?),
        cert_req: true,
        extensions: None,
    };
    Ok(TsaRequest {
        der: req.to_der().map_err(der_err("the request"))?,
        nonce,
        imprint,
    })
}

fn nonce_int(nonce: u64) -> Result<Int, TsaError> {
    // INTEGER is signed and minimal: strip leading zeros, then put one back if the top
    // bit is set so that the nonce stays positive.
    let be = nonce.to_be_bytes();
    let first = be.iter().position(|b| *b != 0).unwrap_or(be.len() - 1);
    let mut bytes = Vec::with_capacity(9);
    if be[first] & 0x80 != 0 {
        bytes.push(0);
    }
    bytes.extend_from_slice(&be[first..]);
    Int::new(&bytes).map_err(der_err("the nonce"))
}

/// The INTEGER as u64, or None if it is negative or longer than 64 bits (a TSA may use
/// up to 160-bit serials; nonces we send are u64).
fn int_u64(i: &Int) -> Option<u64> {
    let b = i.as_bytes();
    if b.first().is_some_and(|x| x & 0x80 != 0) {
        return None;
    }
    let b = match b.split_first() {
        Some((0, rest)) => rest,
        _ => b,
    };
    (b.len() <= 8).then(|| b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

fn int_text(i: &Int) -> String {
    int_u64(i).map_or_else(
        || format!("0x{}", hex::encode(i.as_bytes())),
        |n| n.to_string(),
    )
}

/// PKIStatusInfo as RFC 3161 uses it. x509-tsp takes cmpv2's, whose failInfo is a 16-bit
/// flag set with bit positions written as masks: most RFC 3161 failure bits come out
/// dropped or renamed, and systemFailure (bit 25) makes the whole response undecodable.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct StatusInfo {
    status: u32,
    #[asn1(optional = "true")]
    status_string: Option<Vec<String>>,
    #[asn1(optional = "true")]
    fail_info: Option<BitString>,
}

/// TimeStampResp, keeping the token as the exact bytes the TSA sent.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TimeStampResp {
    status: StatusInfo,
    #[asn1(optional = "true")]
    time_stamp_token: Option<Any>,
}

/// TSTInfo with a genTime that may carry fractional seconds: RFC 3161 allows them (and
/// OpenSSL with `clock_precision_digits`, like many public TSAs, sends them), der's
/// GeneralizedTime refuses them, so x509-tsp's TstInfo cannot decode such tokens.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TstInfo {
    version: TspVersion,
    policy: ObjectIdentifier,
    message_imprint: MessageImprint,
    serial_number: Int,
    gen_time: GenTime,
    #[asn1(optional = "true")]
    accuracy: Option<Accuracy>,
    #[asn1(default = "Default::default")]
    ordering: bool,
    #[asn1(optional = "true")]
    nonce: Option<Int>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    tsa: Option<Any>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

/// GeneralizedTime `YYYYMMDDHHMMSS[.f+]Z`, kept as sent.
#[derive(Clone, Debug, Eq, PartialEq)]
struct GenTime {
    text: String,
    unix_ms: i64,
}

impl FixedTag for GenTime {
    const TAG: Tag = Tag::GeneralizedTime;
}

impl<'a> DecodeValue<'a> for GenTime {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let bytes = reader.read_vec(header.length)?;
        let text = String::from_utf8(bytes).map_err(|_| der::ErrorKind::DateTime)?;
        let unix_ms = parse_gen_time(&text).ok_or(der::ErrorKind::DateTime)?;
        Ok(GenTime { text, unix_ms })
    }
}

impl EncodeValue for GenTime {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.text.len())
    }
    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(self.text.as_bytes())
    }
}

/// Milliseconds since the epoch of a UTC GeneralizedTime; digits past milliseconds are
/// dropped.
fn parse_gen_time(s: &str) -> Option<i64> {
    let body = s.strip_suffix('Z')?;
    let (whole, frac) = match body.split_once('.') {
        Some((_, "")) => return None,
        Some((w, f)) => (w, f),
        None => (body, ""),
    };
    if whole.len() != 14
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| whole.get(r)?.parse::<u32>().ok();
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(n(0..4)?).ok()?, n(4..6)?, n(6..8)?)?;
    let time = date.and_hms_opt(n(8..10)?, n(10..12)?, n(12..14)?)?;
    let millis = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
    Some(time.and_utc().timestamp_millis() + millis)
}

/// ESSCertID (RFC 2634): a SHA-1 hash of a certificate.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertId {
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

/// SigningCertificate (RFC 2634 §5.4); only the first certificate is the signer's.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertId>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

/// ESSCertIDv2 (RFC 5035): hashAlgorithm DEFAULT sha256.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifier<Any>>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

/// The certificates a token's signer must be, or be signed by.
#[derive(Debug, Clone)]
pub struct TsaTrust {
    certs: Vec<Certificate>,
}

impl TsaTrust {
    /// One or more PEM certificates: the TSA's own, its CA, or both.
    ///
    /// # Errors
    /// [`TsaError::Trust`] if the text is not PEM certificates or holds none.
    pub fn from_pem(pem: &str) -> Result<TsaTrust, TsaError> {
        // Blocks are split here rather than by x509-cert's load_pem_chain, which panics
        // (debug) on empty text and refuses the text openssl puts before a block.
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let mut certs = Vec::new();
        let mut rest = pem;
        while let Some(start) = rest.find(BEGIN) {
            let block = &rest[start..];
            let n = certs.len() + 1;
            let end = block
                .find(END)
                .ok_or_else(|| TsaError::Trust(format!("certificate {n}: no \"{END}\" line")))?
                + END.len();
            let cert = Certificate::from_pem(&block.as_bytes()[..end])
                .map_err(|e| TsaError::Trust(format!("certificate {n}: {e}")))?;
            certs.push(cert);
            rest = &block[end..];
        }
        if certs.is_empty() {
            return Err(TsaError::Trust(format!(
                "no \"{BEGIN}\" block in the PEM text"
            )));
        }
        Ok(TsaTrust { certs })
    }

    /// Subjects of the trusted certificates, for messages.
    pub fn subjects(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| c.tbs_certificate.subject.to_string())
            .collect()
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampToken {
    /// The TimeStampToken (CMS ContentInfo) DER: what `openssl ts -verify -token_in` reads.
    pub token_der: Vec<u8>,
    pub gen_time_ms: i64,
    /// The TSTInfo serialNumber's INTEGER content octets, hex.
    pub serial_hex: String,
    pub nonce: Option<u64>,
    pub policy_oid: String,
    pub signer_subject: String,
}

fn status_name(status: u32) -> &'static str {
    match status {
        0 => "granted",
        1 => "grantedWithMods",
        2 => "rejection",
        3 => "waiting",
        4 => "revocationWarning",
        5 => "revocationNotification",
        _ => "unknown",
    }
}

/// RFC 3161 §2.4.2 PKIFailureInfo bit names.
fn fail_info_names(bits: &BitString) -> Vec<String> {
    bits.bits()
        .enumerate()
        .filter(|(_, on)| *on)
        .map(|(i, _)| match i {
            0 => "badAlg".to_string(),
            2 => "badRequest".to_string(),
            5 => "badDataFormat".to_string(),
            14 => "timeNotAvailable".to_string(),
            15 => "unacceptedPolicy".to_string(),
            16 => "unacceptedExtension".to_string(),
            17 => "addInfoNotAvailable".to_string(),
            25 => "systemFailure".to_string(),
            other => format!("bit{other}"),
        })
        .collect()
}

/// A TSA's answer to `req`: status granted, then every check of [`verify_token`] with the
/// request's nonce. `data` is what `req` was made over.
///
/// # Errors
/// [`TsaError::Status`] or [`TsaError::NoToken`] if the TSA did not stamp; otherwise as
/// [`verify_token`].
pub fn verify_response(
    resp_der: &[u8],
    req: &TsaRequest,
    data: &[u8],
    trust: &TsaTrust,
) -> Result<TimestampToken, TsaError> {
    let resp = TimeStampResp::from_der(resp_der).map_err(der_err("the TimeStampResp"))?;
    let status = resp.status.status;
    if status > 1 {
        let status_string = resp
            .status
            .status_string
            .as_ref()
            .map(|t| format!(": {}", t.join("; ")))
            .unwrap_or_default();
        let fail_info = resp
            .status
            .fail_info
            .as_ref()
            .map(fail_info_names)
            .filter(|n| !n.is_empty())
            .map(|n| format!(", failInfo {}", n.join(", ")))
            .unwrap_or_default();
        return Err(TsaError::Status {
            status,
            name: status_name(status),
            status_string,
            fail_info,
        });
    }
    let token = resp
        .time_stamp_token
        .ok_or(TsaError::NoToken(status_name(status)))?;
    let der = token.to_der().map_err(der_err("the token"))?;
    let digest = Sha256::digest(data);
    if digest.as_slice() != req.imprint {
        // The caller's data is not what it asked to be stamped: a bug here, not the TSA's.
        return Err(TsaError::Imprint {
            expected: format!("sha256:{}", hex::encode(req.imprint)),
            found: format!(
                "sha256:{} (of the data given, not the token)",
                hex::encode(digest)
            ),
        });
    }
    verify_token(&der, data, Some(req.nonce), trust)
}

/// Checks a stored token against the data it stamps and the trusted certificates; with
/// `expected_nonce`, also that the token carries that nonce.
///
/// # Errors
/// The first check that fails, each its own [`TsaError`] variant.
pub fn verify_token(
    token_der: &[u8],
    data: &[u8],
    expected_nonce: Option<u64>,
    trust: &TsaTrust,
) -> Result<TimestampToken, TsaError> {
    let ci = ContentInfo::from_der(token_der).map_err(der_err("the token"))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(TsaError::Shape(format!(
            "CMS SignedData (content type {})",
            ci.content_type
        )));
    }
    let sd: SignedData = ci
        .content
        .decode_as()
        .map_err(der_err("the token's SignedData"))?;
    if sd.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(TsaError::Shape(format!(
            "over a TSTInfo (eContentType {})",
            sd.encap_content_info.econtent_type
        )));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| TsaError::Shape("carrying its TSTInfo (no eContent)".into()))?;
    let tst_der = econtent
        .decode_as::<OctetString>()
        .map_err(der_err("the eContent"))?;
    let tst = TstInfo::from_der(tst_der.as_bytes()).map_err(der_err("the TSTInfo"))?;

    let expected = Sha256::digest(data);
    let mi = &tst.message_imprint;
    if mi.hash_algorithm.oid != ID_SHA256 || mi.hashed_message.as_bytes() != expected.as_slice() {
        let alg = if mi.hash_algorithm.oid == ID_SHA256 {
            "sha256".to_string()
        } else {
            mi.hash_algorithm.oid.to_string()
        };
        return Err(TsaError::Imprint {
            expected: format!("sha256:{}", hex::encode(expected)),
            found: format!("{alg}:{}", hex::encode(mi.hashed_message.as_bytes())),
        });
    }
    let nonce = tst.nonce.as_ref().and_then(int_u64);
    if let Some(want) = expected_nonce {
        if nonce != Some(want) {
            return Err(TsaError::Nonce {
                expected: want.to_string(),
                found: tst.nonce.as_ref().map_or("none".into(), int_text),
            });
        }
    }
    // RFC 3161 §2.4.2: the TSA's is the only signature a token may carry.
    let mut signers = sd.signer_infos.0.iter();
    let (Some(signer_info), None) = (signers.next(), signers.next()) else {
        return Err(TsaError::Shape(format!(
            "signed by exactly one signer ({} SignerInfos)",
            sd.signer_infos.0.len()
        )));
    };
    let cert = signer_cert(&sd, signer_info, trust)?;
    let subject = cert.tbs_certificate.subject.to_string();
    let attrs = check_signed_attributes(signer_info, tst_der.as_bytes())?;
    check_signing_certificate(signer_info, &cert)?;
    verify_signature(
        &cert,
        "the signer certificate's",
        &signer_info.signature_algorithm.oid,
        Some(&signer_info.digest_alg.oid),
        &attrs,
        signer_info.signature.as_bytes(),
    )
    .map_err(TsaError::Signature)?;
    check_certificate(&cert, &tst.gen_time, trust)?;
    Ok(TimestampToken {
        token_der: token_der.to_vec(),
        gen_time_ms: tst.gen_time.unix_ms,
        serial_hex: hex::encode(tst.serial_number.as_bytes()),
        nonce,
        policy_oid: tst.policy.to_string(),
        signer_subject: subject,
    })
}

/// The certificate the SignerInfo names, from the token or, for a TSA that left it out,
/// from the trust certificates.
fn signer_cert(
    sd: &SignedData,
    si: &SignerInfo,
    trust: &TsaTrust,
) -> Result<Certificate, TsaError> {
    let in_token = sd
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c),
            CertificateChoices::Other(_) => None,
        });
    let is_signer = |c: &&Certificate| match &si.sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => {
            c.tbs_certificate.issuer == isn.issuer
                && c.tbs_certificate.serial_number == isn.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => c
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .filter(|e| e.extn_id == ID_SUBJECT_KEY_ID)
            .filter_map(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok())
            .any(|k| k.0 == ski.0),
    };
    if let Some(c) = in_token.chain(trust.certs.iter()).find(is_signer) {
        return Ok(c.clone());
    }
    Err(TsaError::SignerMissing(match &si.sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => format!(
            "issuer {}, serial {}",
            isn.issuer,
            hex::encode(isn.serial_number.as_bytes())
        ),
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            format!("subjectKeyIdentifier {}", hex::encode(ski.0.as_bytes()))
        }
    }))
}

fn digest(alg: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    Some(match *alg {
        ID_SHA256 => Sha256::digest(data).to_vec(),
        ID_SHA384 => Sha384::digest(data).to_vec(),
        ID_SHA512 => Sha512::digest(data).to_vec(),
        _ => return None,
    })
}

/// Checks that signedAttrs bind the TSTInfo; returns their DER as signed (RFC 5652 §5.4:
/// the SET OF encoding, not the `[0] IMPLICIT` one in the SignerInfo).
fn check_signed_attributes(si: &SignerInfo, tst_der: &[u8]) -> Result<Vec<u8>, TsaError> {
    let attrs = si.signed_attrs.as_ref().ok_or_else(|| {
        TsaError::Attributes("absent: nothing binds the signature to the TSTInfo".into())
    })?;
    let value = |oid: ObjectIdentifier| -> Option<&Any> {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
    };
    let ct = value(ID_CONTENT_TYPE)
        .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
        .ok_or_else(|| TsaError::Attributes("no content-type attribute".into()))?;
    if ct != ID_CT_TST_INFO {
        return Err(TsaError::Attributes(format!(
            "content-type is {ct}, expected id-ct-TSTInfo {ID_CT_TST_INFO}"
        )));
    }
    let md = value(ID_MESSAGE_DIGEST)
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or_else(|| TsaError::Attributes("no message-digest attribute".into()))?;
    let computed = digest(&si.digest_alg.oid, tst_der).ok_or_else(|| {
        TsaError::Attributes(format!(
            "unsupported SignerInfo digestAlgorithm {}",
            si.digest_alg.oid
        ))
    })?;
    if md.as_bytes() != computed.as_slice() {
        return Err(TsaError::Attributes(format!(
            "message-digest is {}, the eContent's digest is {}",
            hex::encode(md.as_bytes()),
            hex::encode(&computed)
        )));
    }
    // der decodes SET OF into DER order, so this is the TSA's encoding whenever that was
    // DER, as RFC 5652 §5.3 requires of signedAttrs.
    attrs.to_der().map_err(der_err("the signed attributes"))
}

/// RFC 3161 §2.4.2 (with RFC 5816): signedAttrs name the signer certificate by hash in a
/// signingCertificate or signingCertificateV2 attribute, so that another certificate for
/// the same key cannot stand in for it.
fn check_signing_certificate(si: &SignerInfo, cert: &Certificate) -> Result<(), TsaError> {
    let cert_der = cert.to_der().map_err(der_err("the signer certificate"))?;
    let attrs = si.signed_attrs.iter().flat_map(|a| a.iter());
    let mut named = None;
    for a in attrs {
        let Some(value) = a.values.iter().next() else {
            continue;
        };
        let (name, alg, hash) = if a.oid == ID_AA_SIGNING_CERTIFICATE_V2 {
            let sc: SigningCertificateV2 = value
                .decode_as()
                .map_err(der_err("the signingCertificateV2 attribute"))?;
            let Some(first) = sc.certs.into_iter().next() else {
                return Err(TsaError::Attributes(
                    "signingCertificateV2 names no certificate".into(),
                ));
            };
            let alg = first.hash_algorithm.map_or(ID_SHA256, |a| a.oid);
            ("signingCertificateV2", alg, first.cert_hash)
        } else if a.oid == ID_AA_SIGNING_CERTIFICATE {
            let sc: SigningCertificate = value
                .decode_as()
                .map_err(der_err("the signingCertificate attribute"))?;
            let Some(first) = sc.certs.into_iter().next() else {
                return Err(TsaError::Attributes(
                    "signingCertificate names no certificate".into(),
                ));
            };
            ("signingCertificate", ID_SHA1, first.cert_hash)
        } else {
            continue;
        };
        let computed = if alg == ID_SHA1 {
            Some(sha1::Sha1::digest(&cert_der).to_vec())
        } else {
            digest(&alg, &cert_der)
        }
        .ok_or_else(|| {
            TsaError::Attributes(format!("{name} uses unsupported hash algorithm {alg}"))
        })?;
        if hash.as_bytes() != computed.as_slice() {
            return Err(TsaError::Attributes(format!(
                "{name} names the certificate with hash {}, the signer certificate's is {} \
                 (subject {})",
                hex::encode(hash.as_bytes()),
                hex::encode(&computed),
                cert.tbs_certificate.subject
            )));
        }
        named = Some(name);
    }
    named.map(drop).ok_or_else(|| {
        TsaError::Attributes(
            "neither signingCertificate nor signingCertificateV2: nothing names the signer \
             certificate"
                .into(),
        )
    })
}

/// Verifies `sig` over `msg` with `cert`'s key. `digest_alg` names the hash where the
/// signature algorithm does not (CMS allows plain rsaEncryption or id-ecPublicKey, and
/// OpenSSL writes rsaEncryption). `whose` names `cert` in the error, which completes
/// "signature over … ".
fn verify_signature(
    cert: &Certificate,
    whose: &str,
    sig_alg: &ObjectIdentifier,
    digest_alg: Option<&ObjectIdentifier>,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use rsa::pkcs1v15::{Signature as RsaSignature, VerifyingKey as RsaVerifyingKey};
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let spki_der = spki
        .to_der()
        .map_err(|e| format!("cannot be checked: {e}"))?;
    let plain = || {
        digest_alg
            .copied()
            .ok_or(format!("names no digest ({sig_alg})"))
    };
    let (key_alg, hash) = match *sig_alg {
        ID_SHA256_RSA => (ID_RSA, ID_SHA256),
        ID_SHA384_RSA => (ID_RSA, ID_SHA384),
        ID_SHA512_RSA => (ID_RSA, ID_SHA512),
        ID_ECDSA_SHA256 => (ID_EC_PUBLIC_KEY, ID_SHA256),
        ID_ECDSA_SHA384 => (ID_EC_PUBLIC_KEY, ID_SHA384),
        ID_ECDSA_SHA512 => (ID_EC_PUBLIC_KEY, ID_SHA512),
        ID_RSA => (ID_RSA, plain()?),
        ID_EC_PUBLIC_KEY => (ID_EC_PUBLIC_KEY, plain()?),
        other => return Err(format!("uses unsupported signature algorithm {other}")),
    };
    if spki.algorithm.oid != key_alg {
        return Err(format!(
            "uses algorithm {sig_alg}, which does not fit the certificate's key ({})",
            spki.algorithm.oid
        ));
    }
    if key_alg == ID_RSA {
        let key = rsa::RsaPublicKey::from_public_key_der(&spki_der)
            .map_err(|e| format!("cannot be checked: the certificate's RSA key: {e}"))?;
        let bad = || format!("does not verify with {whose} RSA key");
        let s = RsaSignature::try_from(sig).map_err(|_| bad())?;
        let ok = match hash {
            ID_SHA256 => RsaVerifyingKey::<Sha256>::new(key).verify(msg, &s),
            ID_SHA384 => RsaVerifyingKey::<Sha384>::new(key).verify(msg, &s),
            ID_SHA512 => RsaVerifyingKey::<Sha512>::new(key).verify(msg, &s),
            other => return Err(format!("uses unsupported digest {other}")),
        };
        return ok.map_err(|_| bad());
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let prehash = digest(&hash, msg).ok_or(format!("uses unsupported digest {hash}"))?;
    let (name, ok) = match curve {
        Some(ID_P256) => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki_der)
                .map_err(|e| format!("cannot be checked: the certificate's P-256 key: {e}"))?;
            let ok = p256::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| key.verify_prehash(&prehash, &s).is_ok());
            ("P-256", ok)
        }
        Some(ID_P384) => {
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(&spki_der)
                .map_err(|e| format!("cannot be checked: the certificate's P-384 key: {e}"))?;
            let ok = p384::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| key.verify_prehash(&prehash, &s).is_ok());
            ("P-384", ok)
        }
        other => {
            return Err(format!(
                "cannot be checked: unsupported curve {}",
                other.map_or("(none named)".into(), |o| o.to_string())
            ))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("does not verify with {whose} ECDSA {name} key"))
    }
}

fn check_certificate(cert: &Certificate, gen: &GenTime, trust: &TsaTrust) -> Result<(), TsaError> {
    let subject = cert.tbs_certificate.subject.to_string();
    let time_stamping = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == ID_EXT_KEY_USAGE)
        .filter_map(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .any(|k| k.0.contains(&ID_KP_TIME_STAMPING));
    if !time_stamping {
        return Err(TsaError::NotTimeStamping(subject));
    }
    let v = &cert.tbs_certificate.validity;
    let ms = |t: &x509_cert::time::Time| i128::try_from(t.to_unix_duration().as_millis());
    let gen_ms = i128::from(gen.unix_ms);
    let within = matches!((ms(&v.not_before), ms(&v.not_after)),
        (Ok(nb), Ok(na)) if nb <= gen_ms && gen_ms <= na);
    if !within {
        return Err(TsaError::Validity {
            gen_time: gen.text.clone(),
            not_before: v.not_before.to_string(),
            not_after: v.not_after.to_string(),
            subject,
        });
    }
    let der = cert.to_der().map_err(der_err("the signer certificate"))?;
    if trust
        .certs
        .iter()
        .any(|t| t.to_der().ok().as_deref() == Some(der.as_slice()))
    {
        return Ok(());
    }
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(der_err("the signer certificate"))?;
    let mut tried = String::new();
    for issuer in trust
        .certs
        .iter()
        .filter(|t| t.tbs_certificate.subject == cert.tbs_certificate.issuer)
    {
        match verify_signature(
            issuer,
            "this trust certificate's",
            &cert.signature_algorithm.oid,
            None,
            &tbs,
            cert.signature.raw_bytes(),
        ) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = write!(
                    tried,
                    "; trust certificate {}: the signature over the signer certificate {e}",
                    issuer.tbs_certificate.subject
                );
            }
        }
    }
    Err(TsaError::Untrusted {
        subject,
        issuer: cert.tbs_certificate.issuer.to_string(),
        trusted: trust.subjects().join(", "),
        tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_imprint_nonce_and_cert_req() {
        for nonce in [
            0u64,
            1,
            0x7f,
            0x80,
            0xff,
            0x100,
            0x314c_fce4_e065_1827,
            u64::MAX,
        ] {
            let r = request(b"abc", nonce).unwrap();
            let back = TimeStampReq::from_der(&r.der).unwrap();
            assert_eq!(back.version, TspVersion::V1);
            assert_eq!(back.message_imprint.hash_algorithm.oid, ID_SHA256);
            assert_eq!(
                hex::encode(back.message_imprint.hashed_message.as_bytes()),
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            );
            assert_eq!(back.message_imprint.hashed_message.as_bytes(), r.imprint);
            assert!(back.cert_req);
            assert!(back.req_policy.is_none() && back.extensions.is_none());
            assert_eq!(r.nonce, nonce);
            assert_eq!(
                back.nonce.as_ref().and_then(int_u64),
                Some(nonce),
                "{nonce:x}"
            );
        }
    }

    #[test]
    fn nonces_are_minimal_positive_integers() {
        // 02 len content: one leading zero exactly when the top bit is set.
        let enc = |n| nonce_int(n).unwrap().to_der().unwrap();
        assert_eq!(enc(0), [2, 1, 0]);
        assert_eq!(enc(0x7f), [2, 1, 0x7f]);
        assert_eq!(enc(0x80), [2, 2, 0, 0x80]);
        assert_eq!(enc(0x100), [2, 2, 1, 0]);
        assert_eq!(
            enc(u64::MAX),
            [2, 9, 0, 255, 255, 255, 255, 255, 255, 255, 255]
        );
        let neg = Int::new(&[0xff]).unwrap();
        assert_eq!(int_u64(&neg), None);
        assert_eq!(int_text(&neg), "0xff");
    }

    #[test]
    fn gen_times_with_and_without_fractions() {
        assert_eq!(parse_gen_time("19700101000000Z"), Some(0));
        assert_eq!(parse_gen_time("19700101000001.5Z"), Some(1500));
        assert_eq!(
            parse_gen_time("20261122110158.846Z"),
            Some(1_795_345_318_846)
        );
        assert_eq!(
            parse_gen_time("20261122110158.8469Z"),
            Some(1_795_345_318_846)
        );
        for bad in [
            "20261122110158",
            "20261122110158.Z",
            "2026112211015Z",
            "20261322110158Z",
            "2026112211015xZ",
            "20261122110158.8a6Z",
            "",
        ] {
            assert_eq!(parse_gen_time(bad), None, "{bad}");
        }
    }

    fn response(status: u32, strings: Option<Vec<&str>>, fail_bit: Option<usize>) -> Vec<u8> {
        let fail_info = fail_bit.map(|bit| {
            let mut bytes = vec![0u8; bit / 8 + 1];
            bytes[bit / 8] = 0x80 >> (bit % 8);
            BitString::new(u8::try_from(7 - bit % 8).unwrap(), bytes).unwrap()
        });
        TimeStampResp {
            status: StatusInfo {
                status,
                status_string: strings.map(|s| s.into_iter().map(String::from).collect()),
                fail_info,
            },
            time_stamp_token: None,
        }
        .to_der()
        .unwrap()
    }

    #[test]
    fn refusals_name_status_text_and_failure() {
        let trust = TsaTrust { certs: vec![] };
        let req = request(b"x", 1).unwrap();
        let cases = [
            (
                response(2, Some(vec!["unsupported algorithm"]), Some(0)),
                "TSA answered status rejection (2): unsupported algorithm, failInfo badAlg",
            ),
            (
                response(2, None, Some(15)),
                "TSA answered status rejection (2), failInfo unacceptedPolicy",
            ),
            // cmpv2's 16-bit flag set cannot hold bit 25: this is why StatusInfo is ours.
            (
                response(2, Some(vec!["down", "try later"]), Some(25)),
                "TSA answered status rejection (2): down; try later, failInfo systemFailure",
            ),
            (response(3, None, None), "TSA answered status waiting (3)"),
            (
                response(0, None, None),
                "TSA answered status granted without a time-stamp token",
            ),
        ];
        for (der, want) in cases {
            let e = verify_response(&der, &req, b"x", &trust).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn garbage_is_named_not_panicked_on() {
        let trust = TsaTrust { certs: vec![] };
        let e = verify_token(b"\x30\x03\x02\x01", b"x", None, &trust).unwrap_err();
        assert!(
            e.to_string().starts_with("the token is not valid DER"),
            "{e}"
        );
        let req = request(b"x", 1).unwrap();
        let e = verify_response(b"junk", &req, b"x", &trust).unwrap_err();
        assert!(e.to_string().contains("TimeStampResp"), "{e}");
        for pem in ["", "\n", "not pem", "-----BEGIN CERTIFICATE-----\nAAAA\n"] {
            assert!(
                matches!(TsaTrust::from_pem(pem), Err(TsaError::Trust(_))),
                "{pem:?}"
            );
        }
        let e =
            TsaTrust::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("TSA trust certificates: certificate 1: "),
            "{e}"
        );
        // Every prefix of a response fails cleanly.
        let der = response(2, Some(vec!["no"]), Some(2));
        for n in 0..der.len() {
            assert!(verify_response(&der[..n], &req, b"x", &trust).is_err());
        }
    }
}
