//! The benchmark's records: `shared_info` items of about 1 KB of text in 15 pieces of 64
//! characters (the peers write 15 fields of 64), and updates that replace two 64-character
//! fields, as the peers' updates do.
//!
//! A shared-information body has three text fields: `title` and `related_record` carry one
//! piece each and are what updates change; `content` carries the other thirteen, one per line.

use linkage_node::record::{Body, RecordKind};
use serde_json::{Value, json};

/// Characters per piece of text, as in the peers' runners.
pub const PIECE_CHARS: usize = 64;
/// Pieces of text per record.
pub const PIECES: usize = 15;

/// A deterministic source of text, so runs are comparable (xorshift64*, as the samod runner).
#[derive(Debug, Clone)]
pub struct TextSource(u64);

impl TextSource {
    pub fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point.
        TextSource(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn piece(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..PIECE_CHARS)
            .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    /// The body of a new record, as the JSON `Records.Create` takes.
    pub fn body(&mut self, category: u32, formed_at_ms: i64) -> Value {
        let content: Vec<String> = (0..PIECES - 2).map(|_| self.piece()).collect();
        json!({
            "category": 1 + category % 8,
            "title": self.piece(),
            "content": content.join("\n"),
            "formed_at_ms": formed_at_ms,
            "related_record": self.piece(),
        })
    }

    /// An update of two fields, as the JSON `Records.EditBody` takes.
    pub fn update(&mut self) -> Value {
        json!({ "title": self.piece(), "related_record": self.piece() })
    }
}

pub const KIND: RecordKind = RecordKind::SharedInfo;

/// The typed body, for workloads that call the library instead of gRPC.
pub fn typed_body(body: &Value) -> Body {
    Body::from_json(KIND, &body.to_string()).expect("the benchmark's bodies are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_about_a_kilobyte_of_text_and_valid() {
        let mut text = TextSource::new(7);
        let body = text.body(3, 1_700_000_000_000);
        let bytes = body.to_string().len();
        assert!((960..1_200).contains(&bytes), "{bytes} bytes");
        assert!(matches!(typed_body(&body), Body::SharedInfo(_)));
        let update = text.update();
        assert_eq!(update.as_object().unwrap().len(), 2);
    }

    #[test]
    fn the_same_seed_gives_the_same_text() {
        assert_eq!(TextSource::new(1).piece(), TextSource::new(1).piece());
        assert_ne!(TextSource::new(1).piece(), TextSource::new(2).piece());
    }
}
