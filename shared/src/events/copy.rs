use bytes::{BufMut, BytesMut};

use super::{EventType, NewEvent};

/// The column list every COPY writer uses, in row-encoding order.
pub const COPY_IN: &str =
    "COPY user_events (id, user_id, event_type, page_url, metadata, created_at) FROM STDIN (FORMAT binary)";

/// The 19-byte COPY BINARY header.
pub fn copy_header(buf: &mut BytesMut) {
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
}

/// The COPY BINARY trailer.
pub fn copy_trailer(buf: &mut BytesMut) {
    buf.put_i16(-1);
}

/// One row in COPY BINARY format.
pub fn copy_row(
    buf: &mut BytesMut,
    id: i64,
    user_id: i32,
    event_type: EventType,
    page_url: &str,
    metadata: &str,
    created_at_us: i64,
) {
    buf.put_i16(6);
    buf.put_i32(8);
    buf.put_i64(id);
    buf.put_i32(4);
    buf.put_i32(user_id);
    let t = event_type.as_str();
    buf.put_i32(t.len() as i32);
    buf.put_slice(t.as_bytes());
    buf.put_i32(page_url.len() as i32);
    buf.put_slice(page_url.as_bytes());
    buf.put_i32(metadata.len() as i32 + 1);
    buf.put_u8(1); // jsonb binary format version
    buf.put_slice(metadata.as_bytes());
    buf.put_i32(8);
    buf.put_i64(created_at_us - crate::time::PG_EPOCH_US);
}

impl NewEvent {
    pub fn copy_row(&self, buf: &mut BytesMut, id: i64) {
        copy_row(
            buf,
            id,
            self.user_id,
            self.event_type,
            &self.page_url,
            &self.metadata,
            self.created_at_us,
        );
    }
}
