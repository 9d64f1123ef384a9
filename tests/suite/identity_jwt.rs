//! Hand-made JWTs for the token tests: base64, and Ed25519 / HMAC-SHA256
//! signatures built here, so tests can forge tokens the service must refuse
//! (expired, tampered, unsigned, wrong algorithm, missing claims) with the
//! real signing key.
//!
//! The test crate may only use the root package's own dependencies, and no
//! Ed25519 or SHA-2 crate is among them; the hashes therefore come from
//! PostgreSQL (`sha256()`, `sha512()`, built in since PostgreSQL 11) and the
//! curve arithmetic is a port of TweetNaCl's (public domain). The RFC 8032
//! test vector and the comparison with `KeyPair::public_key()` in
//! `identity_tokens` prove both right.

#![allow(dead_code)]

use codeops_tenant::KeyPair;
use sqlx::PgPool;

// ---------------------------------------------------------------------------
// base64

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode_with(alphabet: &[u8; 64], bytes: &[u8], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn decode_with(alphabet: &[u8; 64], text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = alphabet.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

pub fn b64url(bytes: &[u8]) -> String {
    encode_with(URL, bytes, false)
}

pub fn b64url_decode(text: &str) -> Vec<u8> {
    decode_with(URL, text).unwrap_or_else(|| panic!("not base64url: {text}"))
}

pub fn b64_decode(text: &str) -> Vec<u8> {
    decode_with(STD, text).unwrap_or_else(|| panic!("not base64: {text}"))
}

/// The three segments of a compact JWT.
pub fn split(token: &str) -> (String, String, String) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWT: {token}");
    (
        parts[0].to_owned(),
        parts[1].to_owned(),
        parts[2].to_owned(),
    )
}

/// A JWT segment decoded as JSON.
pub fn segment_json(segment: &str) -> serde_json::Value {
    serde_json::from_slice(&b64url_decode(segment)).expect("JWT segment is JSON")
}

pub fn json_segment(value: &serde_json::Value) -> String {
    b64url(value.to_string().as_bytes())
}

// ---------------------------------------------------------------------------
// Hashes, from PostgreSQL

pub async fn sha512(pool: &PgPool, data: &[u8]) -> [u8; 64] {
    let digest: Vec<u8> = sqlx::query_scalar("SELECT sha512($1)")
        .bind(data)
        .fetch_one(pool)
        .await
        .expect("SELECT sha512");
    digest.try_into().expect("64-byte digest")
}

pub async fn sha256(pool: &PgPool, data: &[u8]) -> [u8; 32] {
    let digest: Vec<u8> = sqlx::query_scalar("SELECT sha256($1)")
        .bind(data)
        .fetch_one(pool)
        .await
        .expect("SELECT sha256");
    digest.try_into().expect("32-byte digest")
}

/// HMAC-SHA256 (RFC 2104).
pub async fn hmac_sha256(pool: &PgPool, key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&sha256(pool, key).await);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(message);
    let inner_hash = sha256(pool, &inner).await;
    let mut outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&inner_hash);
    sha256(pool, &outer).await
}

// ---------------------------------------------------------------------------
// Ed25519 (TweetNaCl's field and group arithmetic)

type Gf = [i64; 16];

const GF0: Gf = [0; 16];
const GF1: Gf = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const D2: Gf = [
    0xf159, 0x26b2, 0x9b94, 0xebd6, 0xb156, 0x8283, 0x149a, 0x00e0, 0xd130, 0xeef3, 0x80f2, 0x198e,
    0xfce7, 0x56df, 0xd9dc, 0x2406,
];
const BX: Gf = [
    0xd51a, 0x8f25, 0x2d60, 0xc956, 0xa7b2, 0x9525, 0xc760, 0x692c, 0xdc5c, 0xfdd6, 0xe231, 0xc0a4,
    0x53fe, 0xcd6e, 0x36d3, 0x2169,
];
const BY: Gf = [
    0x6658, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666,
    0x6666, 0x6666, 0x6666, 0x6666,
];
const L: [i64; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn car25519(o: &mut Gf) {
    for i in 0..16 {
        o[i] += 1 << 16;
        let c = o[i] >> 16;
        if i < 15 {
            o[i + 1] += c - 1;
        } else {
            o[0] += 38 * (c - 1);
        }
        o[i] -= c << 16;
    }
}

fn sel25519(p: &mut Gf, q: &mut Gf, b: i64) {
    let c = !(b - 1);
    for i in 0..16 {
        let t = c & (p[i] ^ q[i]);
        p[i] ^= t;
        q[i] ^= t;
    }
}

fn pack25519(n: &Gf) -> [u8; 32] {
    let mut t = *n;
    car25519(&mut t);
    car25519(&mut t);
    car25519(&mut t);
    for _ in 0..2 {
        let mut m = GF0;
        m[0] = t[0] - 0xffed;
        for i in 1..15 {
            m[i] = t[i] - 0xffff - ((m[i - 1] >> 16) & 1);
            m[i - 1] &= 0xffff;
        }
        m[15] = t[15] - 0x7fff - ((m[14] >> 16) & 1);
        let b = (m[15] >> 16) & 1;
        m[14] &= 0xffff;
        sel25519(&mut t, &mut m, 1 - b);
    }
    let mut o = [0u8; 32];
    for i in 0..16 {
        o[2 * i] = (t[i] & 0xff) as u8;
        o[2 * i + 1] = ((t[i] >> 8) & 0xff) as u8;
    }
    o
}

fn add_gf(a: &Gf, b: &Gf) -> Gf {
    std::array::from_fn(|i| a[i] + b[i])
}

fn sub_gf(a: &Gf, b: &Gf) -> Gf {
    std::array::from_fn(|i| a[i] - b[i])
}

fn mul_gf(a: &Gf, b: &Gf) -> Gf {
    let mut t = [0i64; 31];
    for i in 0..16 {
        for j in 0..16 {
            t[i + j] += a[i] * b[j];
        }
    }
    for i in 0..15 {
        t[i] += 38 * t[i + 16];
    }
    let mut o: Gf = std::array::from_fn(|i| t[i]);
    car25519(&mut o);
    car25519(&mut o);
    o
}

fn inv25519(i: &Gf) -> Gf {
    let mut c = *i;
    for a in (0..=253).rev() {
        c = mul_gf(&c, &c);
        if a != 2 && a != 4 {
            c = mul_gf(&c, i);
        }
    }
    c
}

type Point = [Gf; 4];

fn point_add(p: &mut Point, q: &Point) {
    let a = mul_gf(&sub_gf(&p[1], &p[0]), &sub_gf(&q[1], &q[0]));
    let b = mul_gf(&add_gf(&p[0], &p[1]), &add_gf(&q[0], &q[1]));
    let c = mul_gf(&mul_gf(&p[3], &q[3]), &D2);
    let d = mul_gf(&p[2], &q[2]);
    let d = add_gf(&d, &d);
    let e = sub_gf(&b, &a);
    let f = sub_gf(&d, &c);
    let g = add_gf(&d, &c);
    let h = add_gf(&b, &a);
    p[0] = mul_gf(&e, &f);
    p[1] = mul_gf(&h, &g);
    p[2] = mul_gf(&g, &f);
    p[3] = mul_gf(&e, &h);
}

fn cswap(p: &mut Point, q: &mut Point, b: i64) {
    for i in 0..4 {
        sel25519(&mut p[i], &mut q[i], b);
    }
}

fn pack_point(p: &Point) -> [u8; 32] {
    let zi = inv25519(&p[2]);
    let tx = mul_gf(&p[0], &zi);
    let ty = mul_gf(&p[1], &zi);
    let mut r = pack25519(&ty);
    r[31] ^= (pack25519(&tx)[0] & 1) << 7;
    r
}

/// `s` times the base point, packed.
fn scalar_base(s: &[u8; 32]) -> [u8; 32] {
    let mut q: Point = [BX, BY, GF1, mul_gf(&BX, &BY)];
    let mut p: Point = [GF0, GF1, GF1, GF0];
    for i in (0..256).rev() {
        let b = i64::from((s[i / 8] >> (i & 7)) & 1);
        cswap(&mut p, &mut q, b);
        let p_copy = p;
        point_add(&mut q, &p_copy);
        point_add(&mut p, &p_copy);
        cswap(&mut p, &mut q, b);
    }
    pack_point(&p)
}

fn mod_l(x: &mut [i64; 64]) -> [u8; 32] {
    for i in (32..64).rev() {
        let mut carry = 0;
        let mut j = i - 32;
        while j < i - 12 {
            x[j] += carry - 16 * x[i] * L[j - (i - 32)];
            carry = (x[j] + 128) >> 8;
            x[j] -= carry << 8;
            j += 1;
        }
        x[j] += carry;
        x[i] = 0;
    }
    let mut carry = 0;
    for j in 0..32 {
        x[j] += carry - (x[31] >> 4) * L[j];
        carry = x[j] >> 8;
        x[j] &= 255;
    }
    for j in 0..32 {
        x[j] -= carry * L[j];
    }
    let mut r = [0u8; 32];
    for i in 0..32 {
        x[i + 1] += x[i] >> 8;
        r[i] = (x[i] & 255) as u8;
    }
    r
}

fn reduce(h: &[u8; 64]) -> [u8; 32] {
    let mut x: [i64; 64] = std::array::from_fn(|i| i64::from(h[i]));
    mod_l(&mut x)
}

/// An Ed25519 signing key: the 32-byte seed of RFC 8032.
#[derive(Clone)]
pub struct Ed25519 {
    seed: [u8; 32],
}

impl Ed25519 {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { seed }
    }

    /// The seed inside a `KeyPair`'s PKCS#8 PEM (RFC 8410: the private key
    /// is an OCTET STRING `04 20 <32 bytes>` wrapped in `04 22`).
    pub fn from_key_pair(pair: &KeyPair) -> Self {
        let pem = pair.private_key_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = b64_decode(&body);
        let at = der
            .windows(4)
            .position(|w| w == [0x04, 0x22, 0x04, 0x20])
            .expect("Ed25519 PKCS#8 private key octet string");
        let seed: [u8; 32] = der[at + 4..at + 36].try_into().expect("32-byte seed");
        Self { seed }
    }

    async fn expanded(&self, pool: &PgPool) -> ([u8; 32], [u8; 32]) {
        let d = sha512(pool, &self.seed).await;
        let mut scalar: [u8; 32] = d[..32].try_into().expect("32 bytes");
        scalar[0] &= 248;
        scalar[31] &= 127;
        scalar[31] |= 64;
        let prefix: [u8; 32] = d[32..].try_into().expect("32 bytes");
        (scalar, prefix)
    }

    pub async fn public_key(&self, pool: &PgPool) -> [u8; 32] {
        let (scalar, _) = self.expanded(pool).await;
        scalar_base(&scalar)
    }

    /// RFC 8032 Ed25519 signature of `message`.
    pub async fn sign(&self, pool: &PgPool, message: &[u8]) -> [u8; 64] {
        let (scalar, prefix) = self.expanded(pool).await;
        let public = scalar_base(&scalar);
        let mut buf = prefix.to_vec();
        buf.extend_from_slice(message);
        let r = reduce(&sha512(pool, &buf).await);
        let big_r = scalar_base(&r);
        let mut buf = big_r.to_vec();
        buf.extend_from_slice(&public);
        buf.extend_from_slice(message);
        let h = reduce(&sha512(pool, &buf).await);
        let mut x = [0i64; 64];
        for i in 0..32 {
            x[i] = i64::from(r[i]);
        }
        for i in 0..32 {
            for j in 0..32 {
                x[i + j] += i64::from(h[i]) * i64::from(scalar[j]);
            }
        }
        let s = mod_l(&mut x);
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&big_r);
        signature[32..].copy_from_slice(&s);
        signature
    }
}

pub fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

// ---------------------------------------------------------------------------
// Tokens

/// A compact JWT of `header` and `claims`, EdDSA-signed with `key`.
pub async fn sign_eddsa(
    pool: &PgPool,
    key: &Ed25519,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> String {
    let signing_input = format!("{}.{}", json_segment(header), json_segment(claims));
    let signature = key.sign(pool, signing_input.as_bytes()).await;
    format!("{signing_input}.{}", b64url(&signature))
}

/// A compact JWT of `header` and `claims`, HS256-signed with `secret`.
pub async fn sign_hs256(
    pool: &PgPool,
    secret: &[u8],
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> String {
    let signing_input = format!("{}.{}", json_segment(header), json_segment(claims));
    let mac = hmac_sha256(pool, secret, signing_input.as_bytes()).await;
    format!("{signing_input}.{}", b64url(&mac))
}

/// An unsigned (`alg: none`) JWT.
pub fn unsigned(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!("{}.{}.", json_segment(header), json_segment(claims))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
