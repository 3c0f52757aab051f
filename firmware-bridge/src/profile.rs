//! Loading an Afero `device-description.json` (std only).

use std::string::String;
use std::vec::Vec;

use serde::Deserialize;

use crate::error::ConvertError;
use crate::table::{AttributeDef, AttributeTable, Operations};
use crate::value::{unhex, DataType};

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not JSON of the device-description shape.
    #[error("invalid profile JSON")]
    Json(#[from] serde_json::Error),
    /// A `dataType` that is not an Afero type name.
    #[error("attribute {attr_id}: unknown data type {name:?}")]
    UnknownDataType {
        /// Attribute id.
        attr_id: u16,
        /// The name found.
        name: String,
    },
    /// An `operations` entry we do not know.
    #[error("attribute {attr_id}: unknown operation {name:?}")]
    UnknownOperation {
        /// Attribute id.
        attr_id: u16,
        /// The name found.
        name: String,
    },
    /// A default `value` that does not convert to the attribute's type.
    #[error("attribute {attr_id}: bad default value")]
    BadDefault {
        /// Attribute id.
        attr_id: u16,
        /// Conversion failure.
        #[source]
        source: ConvertError,
    },
}

/// The attributes of a device profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Every attribute of every service, in file order.
    pub attributes: Vec<AttributeDef>,
}

#[derive(Deserialize)]
struct RawProfile {
    services: Vec<RawService>,
}

#[derive(Deserialize)]
struct RawService {
    attributes: Vec<RawAttribute>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAttribute {
    id: u16,
    #[serde(default)]
    semantic_type: String,
    data_type: String,
    length: u16,
    #[serde(default)]
    operations: Vec<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    default_value: Option<String>,
}

impl Profile {
    /// Parses the JSON text of a `device-description.json`.
    ///
    /// The default comes from `value` (the string form of the type); when it
    /// is null, `defaultValue` (hex, as the full_api_example profile has it)
    /// is used instead.
    ///
    /// # Errors
    /// [`ProfileError`] for malformed JSON, unknown types or operations, and
    /// defaults that do not convert.
    pub fn from_json(text: &str) -> Result<Self, ProfileError> {
        let raw: RawProfile = serde_json::from_str(text)?;
        let attributes = raw
            .services
            .into_iter()
            .flat_map(|s| s.attributes)
            .map(convert)
            .collect::<Result<_, _>>()?;
        Ok(Self { attributes })
    }

    /// An attribute table holding these definitions and no values yet.
    pub fn to_table(&self) -> AttributeTable {
        let mut table = AttributeTable::new();
        for def in &self.attributes {
            table.insert(def.clone());
        }
        table
    }
}

fn convert(raw: RawAttribute) -> Result<AttributeDef, ProfileError> {
    let attr_id = raw.id;
    let data_type: DataType = raw
        .data_type
        .parse()
        .map_err(|_| ProfileError::UnknownDataType {
            attr_id,
            name: raw.data_type.clone(),
        })?;
    let mut operations = Operations::default();
    for name in &raw.operations {
        if !operations.set_named(name) {
            return Err(ProfileError::UnknownOperation {
                attr_id,
                name: name.clone(),
            });
        }
    }
    let bad = |source| ProfileError::BadDefault { attr_id, source };
    let default = match (raw.value, raw.default_value) {
        (Some(text), _) => Some(
            data_type
                .parse(&text, usize::from(raw.length))
                .map_err(bad)?,
        ),
        (None, Some(hex)) => Some(unhex(&hex).map_err(bad)?),
        (None, None) => None,
    };
    Ok(AttributeDef {
        id: attr_id,
        semantic_type: raw.semantic_type,
        data_type,
        length: raw.length,
        operations,
        default,
    })
}
