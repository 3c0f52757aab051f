//! Push failure ids as Afero shows them: UUIDs, derived from the store's
//! identity (`k:id`) and the failure's number (its `f` + u64 key), so the
//! key layout stays as it is and failures recorded before UUIDs existed get
//! theirs without a rewrite, the same on every start.
//!
//! The id is a UUIDv8 (RFC 9562, section 5.8): its 122 free bits carry a
//! 58-bit tag of the store (the first bits of SHA-256 over its identity)
//! and the 64-bit failure number. Parsing gives the number back only for a
//! UUID of this store; another store's, or any other UUID, names nothing
//! here. The decimal ids tether showed before (the bare number) still
//! resolve for one release.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::core::Core;
use crate::keys;
use crate::store::StoreError;

/// Domain separation for the tag: another use of the store id never
/// yields the same bits.
const TAG_CONTEXT: &[u8] = b"tether push failure ids v1:";
const TAG_BITS: u32 = 58;
const VERSION: u128 = 8;
/// RFC 9562 variant, `0b10` in the two bits after the clock sequence.
const VARIANT: u128 = 0b10;
const LOW_62: u128 = (1 << 62) - 1;

/// Maps failure numbers to UUIDs and back for one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureIds {
    tag: u64,
}

impl FailureIds {
    /// The ids of the store whose identity (`k:id`) is `store_id`.
    pub fn for_store(store_id: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(TAG_CONTEXT)
            .chain_update(store_id.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self {
            tag: u64::from_be_bytes(first) >> (64 - TAG_BITS),
        }
    }

    /// The UUID of failure number `n`.
    pub fn uuid(&self, n: u64) -> Uuid {
        let payload = (u128::from(self.tag) << 64) | u128::from(n);
        let custom_a = payload >> 74;
        let custom_b = (payload >> 62) & 0xfff;
        let custom_c = payload & LOW_62;
        Uuid::from_u128(
            (custom_a << 80) | (VERSION << 76) | (custom_b << 64) | (VARIANT << 62) | custom_c,
        )
    }

    /// The failure number `id` names in this store: a UUID from
    /// [`uuid`](Self::uuid) (any case, hyphenated or not), or a legacy
    /// decimal id. `None` for anything else, including another store's
    /// UUIDs.
    pub fn number(&self, id: &str) -> Option<u64> {
        if let Some(n) = legacy_number(id) {
            return Some(n);
        }
        let v = Uuid::try_parse(id).ok()?.as_u128();
        if (v >> 76) & 0xf != VERSION || (v >> 62) & 0b11 != VARIANT {
            return None;
        }
        let payload = ((v >> 80) << 74) | (((v >> 64) & 0xfff) << 62) | (v & LOW_62);
        // Truncation keeps the low 64 bits: exactly the number.
        ((payload >> 64) as u64 == self.tag).then_some(payload as u64)
    }
}

/// The decimal ids of earlier releases (`"10"`); kept for one release.
fn legacy_number(id: &str) -> Option<u64> {
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok().filter(|n| *n > 0)
}

impl Core {
    /// The failure ids of this store. A store without an identity (the
    /// high-water check at open assigns one; only the crate's tests open a
    /// store without it) uses the empty one.
    ///
    /// # Errors
    /// On storage errors, or [`StoreError::Corrupt`] when `k:id` is not UTF-8.
    pub fn failure_ids(&self) -> Result<FailureIds, StoreError> {
        let id = match self.storage.get(keys::ID)? {
            Some(v) => {
                String::from_utf8(v).map_err(|_| StoreError::Corrupt("k:id is malformed".into()))?
            }
            None => String::new(),
        };
        Ok(FailureIds::for_store(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: &str = "5f0c6f0e-5a54-4f0e-9d6b-1f2a3b4c5d6e";

    #[test]
    fn a_uuid_is_a_version_8_rfc_9562_uuid_that_gives_its_number_back() {
        let ids = FailureIds::for_store(STORE);
        for n in [1, 2, 10, 1 << 40, u64::MAX] {
            let u = ids.uuid(n);
            assert_eq!(u.get_version_num(), 8, "{u}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{u}");
            assert_eq!(ids.number(&u.to_string()), Some(n));
            assert_eq!(ids.number(&u.simple().to_string().to_uppercase()), Some(n));
        }
    }

    #[test]
    fn a_small_number_reads_at_the_end_of_its_uuid() {
        let u = FailureIds::for_store(STORE).uuid(7).to_string();
        assert!(u.ends_with("-8000-000000000007"), "{u}");
    }

    #[test]
    fn the_same_store_always_gives_the_same_uuids_and_numbers_differ() {
        let a = FailureIds::for_store(STORE);
        assert_eq!(a.uuid(7), FailureIds::for_store(STORE).uuid(7));
        assert_ne!(a.uuid(7), a.uuid(8));
    }

    #[test]
    fn another_stores_uuid_or_any_other_uuid_names_nothing() {
        let ours = FailureIds::for_store(STORE);
        let theirs = FailureIds::for_store("another store");
        assert_eq!(ours.number(&theirs.uuid(3).to_string()), None);
        assert_eq!(ours.number(&Uuid::new_v4().to_string()), None);
        assert_eq!(ours.number(&Uuid::nil().to_string()), None);
    }

    #[test]
    fn legacy_decimal_ids_resolve_and_anything_else_does_not() {
        let ids = FailureIds::for_store(STORE);
        assert_eq!(ids.number("10"), Some(10));
        assert_eq!(ids.number("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            " 1",
            "1e3",
            "18446744073709551616",
            "abc",
        ] {
            assert_eq!(ids.number(bad), None, "{bad:?}");
        }
    }
}
