//! The long connection's wire format: protobuf `pbbp2.Frame` (proto2).
//! Fields 1-4 are *required*, so they are always encoded, even when zero (a
//! proto3-style encoder would drop them and strict peers reject the frame).

use prost::Message;

/// One `key: value` header; duplicates are possible and the first one wins.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Header {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct Frame {
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    /// 0 = control (ping / pong), 1 = data (event, card, ACK).
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    #[prost(string, optional, tag = "6")]
    pub payload_encoding: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub payload_type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    #[prost(string, optional, tag = "9")]
    pub log_id_new: Option<String>,
}

pub const METHOD_CONTROL: i32 = 0;
pub const METHOD_DATA: i32 = 1;

impl Frame {
    /// The first header named `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.key == key).map(|h| h.value.as_str())
    }

    /// The client's ping: a control frame with `type=ping`.
    pub fn ping(service: i32) -> Self {
        Frame {
            seq_id: 0,
            log_id: 0,
            service,
            method: METHOD_CONTROL,
            headers: vec![Header { key: "type".into(), value: "ping".into() }],
            payload_encoding: None,
            payload_type: None,
            payload: None,
            log_id_new: None,
        }
    }

    /// The ACK for a data frame: the frame echoed with `biz_rt` appended and
    /// the response JSON as payload.
    pub fn ack(&self, biz_rt_ms: u64, response: Vec<u8>) -> Self {
        let mut ack = self.clone();
        ack.headers.push(Header { key: "biz_rt".into(), value: biz_rt_ms.to_string() });
        ack.payload = Some(response);
        ack
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Frame::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn data_frame() -> Frame {
        let h = |k: &str, v: &str| Header { key: k.into(), value: v.into() };
        Frame {
            seq_id: 7,
            log_id: 9,
            service: 1,
            method: METHOD_DATA,
            headers: vec![h("type", "event"), h("message_id", "m1"), h("sum", "1"), h("seq", "0"), h("trace_id", "t1")],
            payload_encoding: None,
            payload_type: None,
            payload: Some(br#"{"schema":"2.0"}"#.to_vec()),
            log_id_new: None,
        }
    }

    // Wire vectors from shared/ref/feishu.md §1.3.
    #[test]
    fn ping_matches_the_reference_bytes() {
        assert_eq!(hex(&Frame::ping(1).to_bytes()), "08001000180120002a0c0a0474797065120470696e67");
    }

    #[test]
    fn data_frame_and_ack_match_the_reference_bytes() {
        let frame_hex = "08071009180120012a0d0a047479706512056576656e742a100a0a6d6573736167655f696412026d312a080a0373756d1201312a080a037365711201302a0e0a0874726163655f69641202743142107b22736368656d61223a22322e30227d";
        assert_eq!(hex(&data_frame().to_bytes()), frame_hex);
        assert_eq!(Frame::from_bytes(&unhex(frame_hex)).unwrap(), data_frame());
        let ack = data_frame().ack(3, br#"{"code":200,"headers":null,"data":null}"#.to_vec());
        assert_eq!(
            hex(&ack.to_bytes()),
            "08071009180120012a0d0a047479706512056576656e742a100a0a6d6573736167655f696412026d312a080a0373756d1201312a080a037365711201302a0e0a0874726163655f6964120274312a0b0a0662697a5f727412013342277b22636f6465223a3230302c2268656164657273223a6e756c6c2c2264617461223a6e756c6c7d"
        );
    }

    #[test]
    fn pong_with_config_decodes() {
        let pong = unhex(
            "08001000180120002a0c0a04747970651204706f6e6742547b2250696e67496e74657276616c223a3132302c225265636f6e6e656374436f756e74223a2d312c225265636f6e6e656374496e74657276616c223a3132302c225265636f6e6e6563744e6f6e6365223a33307d",
        );
        let frame = Frame::from_bytes(&pong).unwrap();
        assert_eq!((frame.method, frame.header("type")), (METHOD_CONTROL, Some("pong")));
        assert!(String::from_utf8(frame.payload.unwrap()).unwrap().contains("\"PingInterval\":120"));
    }

    #[test]
    fn garbage_is_an_error_and_missing_fields_decode_as_zero() {
        assert!(Frame::from_bytes(b"\xff\xff\xff").is_err());
        // prost does not enforce proto2 `required` when decoding: a frame with
        // only SeqID and LogID decodes with zeros, and has no `type` header, so
        // the client skips it.
        let partial = Frame::from_bytes(&unhex("08071009")).unwrap();
        assert_eq!((partial.seq_id, partial.method, partial.header("type")), (7, METHOD_CONTROL, None));
    }
}
