//! The attribute table: what each attribute is (from the profile) and its
//! current value, plus the ownership rule of spec §5.4.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::value::DataType;

/// Attribute ids below this (from 1) belong to the MCU.
pub const FIRST_MODULE_ATTRIBUTE: u16 = 1024;
/// The MCU→device channel the MCU updates to carry tunneled attributes.
pub const MCU_TO_DEVICE_CHANNEL: u16 = 1099;

/// Who owns an attribute and so sends its UPDATEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Attributes 1..=1023.
    Mcu,
    /// Everything else (GPIO, system and version attributes...).
    Module,
}

/// Owner of an attribute id (spec §5.4).
pub fn owner(attr_id: u16) -> Owner {
    if (1..FIRST_MODULE_ATTRIBUTE).contains(&attr_id) {
        Owner::Mcu
    } else {
        Owner::Module
    }
}

/// Whether the MCU may send an UPDATE for this id: its own attributes, and
/// the channel attribute that wraps its tunneled ones.
pub fn mcu_may_update(attr_id: u16) -> bool {
    owner(attr_id) == Owner::Mcu || attr_id == MCU_TO_DEVICE_CHANNEL
}

/// The `operations` flags of a profile attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Operations {
    /// `READ`.
    pub read: bool,
    /// `WRITE`: a non-owner may SET it.
    pub write: bool,
    /// `STORE_IN_FLASH`.
    pub store_in_flash: bool,
    /// `PASS_THROUGH`.
    pub pass_through: bool,
    /// `MCU`: visible to the MCU.
    pub mcu: bool,
}

impl Operations {
    /// Sets the flag named like the profile's string; `false` when unknown.
    pub fn set_named(&mut self, name: &str) -> bool {
        let flag = match name {
            "READ" => &mut self.read,
            "WRITE" => &mut self.write,
            "STORE_IN_FLASH" => &mut self.store_in_flash,
            "PASS_THROUGH" => &mut self.pass_through,
            "MCU" => &mut self.mcu,
            _ => return false,
        };
        *flag = true;
        true
    }
}

/// One attribute as the profile describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDef {
    /// Attribute id.
    pub id: u16,
    /// Human name from the profile (`semanticType`).
    pub semantic_type: String,
    /// Data type.
    pub data_type: DataType,
    /// Declared maximum length in bytes.
    pub length: u16,
    /// Allowed operations.
    pub operations: Operations,
    /// Default value in wire form, when the profile has one.
    pub default: Option<Vec<u8>>,
}

impl AttributeDef {
    /// A definition for an attribute the profile does not list (e.g. the
    /// device id 1202): opaque bytes, readable, of the given length.
    pub fn opaque(id: u16, length: u16) -> Self {
        Self {
            id,
            semantic_type: String::new(),
            data_type: DataType::Bytes,
            length,
            operations: Operations {
                read: true,
                ..Operations::default()
            },
            default: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    def: AttributeDef,
    value: Option<Vec<u8>>,
}

/// Attribute definitions and current values, keyed by id. Module-owned
/// values are set by the host; MCU-owned values are the last the MCU reported.
#[derive(Debug, Clone, Default)]
pub struct AttributeTable {
    entries: BTreeMap<u16, Entry>,
}

impl AttributeTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a definition; a previous value is kept.
    pub fn insert(&mut self, def: AttributeDef) {
        let value = self.entries.remove(&def.id).and_then(|e| e.value);
        self.entries.insert(def.id, Entry { def, value });
    }

    /// The definition of an attribute.
    pub fn def(&self, attr_id: u16) -> Option<&AttributeDef> {
        self.entries.get(&attr_id).map(|e| &e.def)
    }

    /// Every definition, by id.
    pub fn defs(&self) -> impl Iterator<Item = &AttributeDef> {
        self.entries.values().map(|e| &e.def)
    }

    /// The value last set or reported, if any.
    pub fn value(&self, attr_id: u16) -> Option<&[u8]> {
        self.entries.get(&attr_id).and_then(|e| e.value.as_deref())
    }

    /// What to report for an attribute: its value, else its default, else
    /// the type's zero value. `None` for an unknown attribute.
    pub fn current(&self, attr_id: u16) -> Option<Vec<u8>> {
        let e = self.entries.get(&attr_id)?;
        Some(match (&e.value, &e.def.default) {
            (Some(v), _) | (None, Some(v)) => v.clone(),
            (None, None) => e.def.data_type.zero_value(),
        })
    }

    /// Stores a value; an attribute not yet defined is added as opaque bytes.
    pub fn set_value(&mut self, attr_id: u16, value: Vec<u8>) {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        let entry = self.entries.entry(attr_id).or_insert_with(|| Entry {
            def: AttributeDef::opaque(attr_id, len),
            value: None,
        });
        entry.value = Some(value);
    }
}
