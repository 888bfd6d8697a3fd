//! Packed checkpoint entries: a compact encoding for the two bulk parts of checkpoint
//! deltas, the usage sink's reading updates and the dedup shard's changes.
//!
//! bincode writes every field at full width: a [`ReadingUpdate`] takes 54 bytes and a
//! [`DedupChange`] 28, and a job catching up writes one of each per event at every
//! commit. Packed, a batch is written as one byte string (bincode copies it whole):
//! - a reading update is a flags byte (the diff, whether customer and dimensions repeat
//!   the previous update's, the kind of value), the fingerprints only when they change,
//!   the meter as a varint, the timestamp as a zigzag varint of its difference from the
//!   previous one, and the value: a whole number as a zigzag varint of its integer
//!   (most meter values), else the scaled `i128` as a zigzag varint;
//! - a dedup change is a tag byte, the key's 16 bytes and the timestamp's difference
//!   from the previous one (a `Keep`), or the cutoff (a `Sweep`).
//!
//! Decoding gives back exactly the values encoded (a unit test round-trips the edge
//! values); malformed bytes give a [`PackError`] naming what was cut short or unknown.

use om_model::{Decimal9, Micros};
use om_operators::{DedupChange, ReadingUpdate, UpdateValue};
use std::marker::PhantomData;

/// Why packed bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    /// The bytes end inside an entry.
    #[error("packed checkpoint entry cut short at byte {0}")]
    Truncated(usize),
    /// A tag or flag no encoder writes.
    #[error("packed checkpoint entry has unknown tag {tag:#04x} at byte {at}")]
    UnknownTag {
        /// The tag byte.
        tag: u8,
        /// Its position.
        at: usize,
    },
    /// A varint longer than its type.
    #[error("packed checkpoint entry has an overlong number at byte {0}")]
    Overlong(usize),
    /// A `latest` id that is not UTF-8.
    #[error("packed checkpoint entry has an id that is not UTF-8 at byte {0}")]
    NotUtf8(usize),
}

/// A type whose slices pack into one byte string.
pub trait Pack: Sized {
    /// Appends `items`, packed, to `out`.
    fn pack(items: &[Self], out: &mut Vec<u8>);
    /// Decodes what [`Pack::pack`] wrote.
    fn unpack(bytes: &[u8]) -> Result<Vec<Self>, PackError>;
}

/// A batch saved packed; serialized as one byte string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed<T>(pub Vec<T>);

/// A batch by reference, serialized in the layout of [`Packed`].
pub struct PackedRef<'a, T>(pub &'a [T]);

impl<T: Pack> serde::Serialize for PackedRef<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        T::pack(self.0, &mut bytes);
        s.serialize_bytes(&bytes)
    }
}

impl<T: Pack> serde::Serialize for Packed<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PackedRef(&self.0).serialize(s)
    }
}

impl<'de, T: Pack> serde::Deserialize<'de> for Packed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes<T>(PhantomData<T>);
        impl<T: Pack> serde::de::Visitor<'_> for Bytes<T> {
            type Value = Packed<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("packed checkpoint entries")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                T::unpack(v).map(Packed).map_err(E::custom)
            }
        }
        d.deserialize_bytes(Bytes(PhantomData))
    }
}

/// Flags of a packed reading update.
const DIFF_MINUS: u8 = 0b0000_0001;
const DIFF_OTHER: u8 = 0b0000_0010;
const SAME_CUSTOMER: u8 = 0b0000_0100;
const SAME_DIMENSIONS: u8 = 0b0000_1000;
const VALUE_SHIFT: u32 = 4;
const VALUE_WHOLE: u8 = 0;
const VALUE_SCALED: u8 = 1;
const VALUE_SCALAR: u8 = 2;
const VALUE_LATEST: u8 = 3;
const KNOWN_FLAGS: u8 = 0b0011_1111;

/// Billionths per unit: a [`Decimal9`]'s scale.
const SCALE: i64 = 1_000_000_000;

impl Pack for ReadingUpdate {
    fn pack(items: &[Self], out: &mut Vec<u8>) {
        out.reserve(items.len() * 12);
        let mut prev: Option<&ReadingUpdate> = None;
        let mut prev_ts: Micros = 0;
        for u in items {
            let mut flags = match u.diff {
                1 => 0,
                -1 => DIFF_MINUS,
                _ => DIFF_OTHER,
            };
            if prev.is_some_and(|p| p.customer == u.customer) {
                flags |= SAME_CUSTOMER;
            }
            if prev.is_some_and(|p| p.dimensions == u.dimensions) {
                flags |= SAME_DIMENSIONS;
            }
            let whole = match &u.value {
                UpdateValue::Number(v) => whole_units(*v),
                _ => None,
            };
            let kind = match (&u.value, whole) {
                (UpdateValue::Number(_), Some(_)) => VALUE_WHOLE,
                (UpdateValue::Number(_), None) => VALUE_SCALED,
                (UpdateValue::Scalar(_), _) => VALUE_SCALAR,
                (UpdateValue::Latest(..), _) => VALUE_LATEST,
            };
            out.push(flags | (kind << VALUE_SHIFT));
            if flags & DIFF_OTHER != 0 {
                put_varint(out, zigzag(u.diff as i128));
            }
            if flags & SAME_CUSTOMER == 0 {
                out.extend_from_slice(&u.customer.to_le_bytes());
            }
            if flags & SAME_DIMENSIONS == 0 {
                out.extend_from_slice(&u.dimensions.to_le_bytes());
            }
            put_varint(out, u.meter as u128);
            put_varint(out, zigzag(u.timestamp.wrapping_sub(prev_ts) as i128));
            match (&u.value, whole) {
                (UpdateValue::Number(_), Some(units)) => put_varint(out, zigzag(units as i128)),
                (UpdateValue::Number(v), None) => put_varint(out, zigzag(v.raw())),
                (UpdateValue::Scalar(fp), _) => out.extend_from_slice(&fp.to_le_bytes()),
                (UpdateValue::Latest(v, id), _) => {
                    put_varint(out, zigzag(v.raw()));
                    put_varint(out, id.len() as u128);
                    out.extend_from_slice(id.as_bytes());
                }
            }
            prev = Some(u);
            prev_ts = u.timestamp;
        }
    }

    fn unpack(bytes: &[u8]) -> Result<Vec<Self>, PackError> {
        let mut r = Reader { bytes, at: 0 };
        let mut out: Vec<ReadingUpdate> = Vec::new();
        let mut prev_ts: Micros = 0;
        while !r.done() {
            let at = r.at;
            let flags = r.byte()?;
            if flags & !KNOWN_FLAGS != 0 || flags & DIFF_MINUS != 0 && flags & DIFF_OTHER != 0 {
                return Err(PackError::UnknownTag { tag: flags, at });
            }
            let diff = if flags & DIFF_OTHER != 0 {
                r.signed_i64()?
            } else if flags & DIFF_MINUS != 0 {
                -1
            } else {
                1
            };
            // A fingerprint follows unless it repeats the previous update's (the first
            // update has none to repeat).
            let mut fingerprint = |same: u8, of: fn(&ReadingUpdate) -> u64| {
                if flags & same == 0 {
                    return Ok(u64::from_le_bytes(r.array()?));
                }
                out.last()
                    .map(of)
                    .ok_or(PackError::UnknownTag { tag: flags, at })
            };
            let customer = fingerprint(SAME_CUSTOMER, |p| p.customer)?;
            let dimensions = fingerprint(SAME_DIMENSIONS, |p| p.dimensions)?;
            let meter_at = r.at;
            let meter = u16::try_from(r.varint()?).map_err(|_| PackError::Overlong(meter_at))?;
            let timestamp = prev_ts.wrapping_add(r.signed_i64()?);
            let value = match flags >> VALUE_SHIFT {
                VALUE_WHOLE => {
                    let units = r.signed_i64()?;
                    UpdateValue::Number(Decimal9::from_raw(units as i128 * SCALE as i128))
                }
                VALUE_SCALED => UpdateValue::Number(Decimal9::from_raw(r.signed()?)),
                VALUE_SCALAR => UpdateValue::Scalar(u128::from_le_bytes(r.array()?)),
                _ => {
                    let v = Decimal9::from_raw(r.signed()?);
                    let len_at = r.at;
                    let len =
                        usize::try_from(r.varint()?).map_err(|_| PackError::Overlong(len_at))?;
                    let id_at = r.at;
                    let id =
                        std::str::from_utf8(r.take(len)?).map_err(|_| PackError::NotUtf8(id_at))?;
                    UpdateValue::Latest(v, id.into())
                }
            };
            out.push(ReadingUpdate {
                customer,
                dimensions,
                timestamp,
                meter,
                diff,
                value,
            });
            prev_ts = timestamp;
        }
        Ok(out)
    }
}

/// Tags of a packed dedup change.
const KEEP: u8 = 0;
const SWEEP: u8 = 1;

impl Pack for DedupChange {
    fn pack(items: &[Self], out: &mut Vec<u8>) {
        out.reserve(items.len() * 21);
        let mut prev_ts: Micros = 0;
        for c in items {
            match *c {
                DedupChange::Keep(key, ts) => {
                    out.push(KEEP);
                    out.extend_from_slice(&key.to_le_bytes());
                    put_varint(out, zigzag(ts.wrapping_sub(prev_ts) as i128));
                    prev_ts = ts;
                }
                DedupChange::Sweep(cutoff) => {
                    out.push(SWEEP);
                    put_varint(out, zigzag(cutoff as i128));
                }
            }
        }
    }

    fn unpack(bytes: &[u8]) -> Result<Vec<Self>, PackError> {
        let mut r = Reader { bytes, at: 0 };
        let mut out = Vec::new();
        let mut prev_ts: Micros = 0;
        while !r.done() {
            let at = r.at;
            match r.byte()? {
                KEEP => {
                    let key = u128::from_le_bytes(r.array()?);
                    let ts = prev_ts.wrapping_add(r.signed_i64()?);
                    out.push(DedupChange::Keep(key, ts));
                    prev_ts = ts;
                }
                SWEEP => out.push(DedupChange::Sweep(r.signed_i64()?)),
                tag => return Err(PackError::UnknownTag { tag, at }),
            }
        }
        Ok(out)
    }
}

/// The value in whole units when it has no fraction and fits an `i64` (the fast path:
/// `i64` division by a constant is a multiplication).
fn whole_units(v: Decimal9) -> Option<i64> {
    let raw = i64::try_from(v.raw()).ok()?;
    (raw % SCALE == 0).then_some(raw / SCALE)
}

fn zigzag(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

fn unzigzag(v: u128) -> i128 {
    (v >> 1) as i128 ^ -((v & 1) as i128)
}

/// LEB128: seven bits per byte, low bits first, the high bit set on all but the last.
fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over packed bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn byte(&mut self) -> Result<u8, PackError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or(PackError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PackError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(PackError::Truncated(self.bytes.len()))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PackError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn varint(&mut self) -> Result<u128, PackError> {
        let start = self.at;
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.byte()?;
            let bits = (b & 0x7f) as u128;
            if shift == 126 && bits > 0b11 {
                return Err(PackError::Overlong(start));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PackError::Overlong(start))
    }

    fn signed(&mut self) -> Result<i128, PackError> {
        self.varint().map(unzigzag)
    }

    fn signed_i64(&mut self) -> Result<i64, PackError> {
        let start = self.at;
        i64::try_from(self.signed()?).map_err(|_| PackError::Overlong(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(
        customer: u64,
        dimensions: u64,
        timestamp: Micros,
        value: UpdateValue,
    ) -> ReadingUpdate {
        ReadingUpdate {
            customer,
            dimensions,
            timestamp,
            meter: 3,
            diff: 1,
            value,
        }
    }

    fn round_trip<T: Pack + PartialEq + std::fmt::Debug>(items: &[T]) -> Vec<u8> {
        let mut bytes = Vec::new();
        T::pack(items, &mut bytes);
        assert_eq!(T::unpack(&bytes).unwrap(), items);
        bytes
    }

    #[test]
    fn reading_updates_come_back_exactly_edge_values_included() {
        let n = |raw: i128| UpdateValue::Number(Decimal9::from_raw(raw));
        let mut updates = vec![
            update(7, 9, 1_700_000_000_000_000, n(1_500 * SCALE as i128)),
            update(7, 9, 1_699_999_000_000_000, n(-2 * SCALE as i128)),
            update(7, 10, 1_700_000_000_000_001, n(1)),
            update(8, 10, Micros::MIN, n(i128::MAX)),
            update(8, 10, Micros::MAX, n(i128::MIN)),
            update(u64::MAX, 0, 0, n(i64::MAX as i128)),
            update(u64::MAX, 0, 0, n(i64::MIN as i128)),
            update(
                1,
                2,
                -5,
                n((i64::MAX as i128 / SCALE as i128) * SCALE as i128),
            ),
            update(1, 2, 3, UpdateValue::Scalar(u128::MAX - 5)),
            update(
                1,
                2,
                3,
                UpdateValue::Latest(Decimal9::from_raw(-7), "evt-é-1".into()),
            ),
            update(
                1,
                2,
                3,
                UpdateValue::Latest(Decimal9::from_raw(0), "".into()),
            ),
        ];
        updates[1].diff = -1;
        updates[2].diff = 5;
        updates[3].meter = u16::MAX;
        round_trip(&updates);
        round_trip::<ReadingUpdate>(&[]);
    }

    #[test]
    fn dedup_changes_come_back_exactly() {
        let changes = [
            DedupChange::Keep(u128::MAX, 1_700_000_000_000_000),
            DedupChange::Keep(0, Micros::MIN),
            DedupChange::Sweep(Micros::MAX),
            DedupChange::Keep(12345, Micros::MAX),
            DedupChange::Sweep(Micros::MIN),
        ];
        round_trip(&changes);
    }

    #[test]
    fn typical_updates_pack_to_under_half_of_bincode() {
        // An event's two readings of one customer, a second apart, whole token counts.
        let updates: Vec<ReadingUpdate> = (0..1000)
            .flat_map(|i| {
                let ts = 1_700_000_000_000_000 + i * 1_000_000;
                let value = UpdateValue::Number(Decimal9::from_int(1000 + i));
                [
                    update(i as u64 % 50, 1, ts, value.clone()),
                    update(i as u64 % 50, 2, ts, value),
                ]
            })
            .collect();
        let packed = round_trip(&updates).len();
        let bincode = bincode::serialize(&updates).unwrap().len();
        assert!(
            packed * 2 < bincode,
            "packed {packed} bytes, bincode {bincode}"
        );
    }

    #[test]
    fn cut_short_or_unknown_bytes_are_errors_not_garbage() {
        let mut bytes = Vec::new();
        let updates = [update(1, 2, 3, UpdateValue::Scalar(9))];
        ReadingUpdate::pack(&updates, &mut bytes);
        for end in 1..bytes.len() {
            assert!(
                matches!(
                    ReadingUpdate::unpack(&bytes[..end]),
                    Err(PackError::Truncated(_))
                ),
                "{end} of {} bytes decoded",
                bytes.len()
            );
        }
        assert_eq!(
            ReadingUpdate::unpack(&[SAME_CUSTOMER]),
            Err(PackError::UnknownTag {
                tag: SAME_CUSTOMER,
                at: 0
            })
        );
        assert_eq!(
            DedupChange::unpack(&[7]),
            Err(PackError::UnknownTag { tag: 7, at: 0 })
        );
        assert_eq!(
            DedupChange::unpack(&[
                SWEEP, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ]),
            Err(PackError::Overlong(1))
        );
    }

    #[test]
    fn packed_batches_travel_inside_bincode() {
        let batch = Packed(vec![DedupChange::Keep(1, 2), DedupChange::Sweep(3)]);
        let bytes = bincode::serialize(&(5u32, &batch, PackedRef(&batch.0))).unwrap();
        let (n, a, b): (u32, Packed<DedupChange>, Packed<DedupChange>) =
            bincode::deserialize(&bytes).unwrap();
        assert_eq!((n, &a, &b), (5, &batch, &batch));
    }
}
