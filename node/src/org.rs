//! The organisation directory: which townships, departments and internal units exist, and
//! what each may do. Beidaihe's directory is embedded; an operator can replace it with a file.
//!
//! Rules read the directory; they never hard-code an organisation id.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The project's own copy of the district's directory (public facts, see the file header).
const BEIDAIHE_TOML: &str = include_str!("../data/beidaihe-orgs.toml");

/// The role an organisation plays in the mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgKind {
    /// A town or subdistrict (镇/街道); subdistricts are treated as township-level units.
    Township,
    /// A district department with enforcement powers (区直执法部门).
    Department,
    /// The District Justice Bureau (区司法局): coordinates disputes (D-2), publishes the
    /// working-day calendar.
    JusticeBureau,
    /// The District People's Government (区人民政府): decides escalated disputes (D-3) and
    /// receives reports of refusals (J-3).
    DistrictGovernment,
}

impl OrgKind {
    pub fn label(self) -> &'static str {
        match self {
            OrgKind::Township => "乡镇/街道 township",
            OrgKind::Department => "区直部门 department",
            OrgKind::JusticeBureau => "区司法局 justice bureau",
            OrgKind::DistrictGovernment => "区人民政府 district government",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Organisation {
    pub id: String,
    pub kind: OrgKind,
    pub name: String,
    pub name_en: String,
    #[serde(default)]
    pub verified: bool,
}

/// An internal or dispatched unit (科室, 中队, 派出机构). It may record and handle work for
/// its parent but never sends a transfer in its own name (T-4).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Unit {
    pub id: String,
    pub parent: String,
    pub name: String,
    pub name_en: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct District {
    pub code: String,
    pub name: String,
    pub name_en: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("organisation directory {source_name} is not valid TOML: {detail}")]
    Parse { source_name: String, detail: String },
    #[error("organisation directory {0} could not be read: {1}")]
    Read(String, std::io::Error),
    #[error("organisation directory lists {0:?} twice")]
    Duplicate(String),
    #[error("unit {unit:?} names parent {parent:?}, which is not an organisation")]
    OrphanUnit { unit: String, parent: String },
    #[error("organisation directory has no {0}")]
    MissingRole(&'static str),
}

#[derive(Deserialize)]
struct DirectoryFile {
    district: District,
    #[serde(default, rename = "org")]
    orgs: Vec<Organisation>,
    #[serde(default, rename = "unit")]
    units: Vec<Unit>,
}

/// What an id names in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    Org(&'a Organisation),
    Unit(&'a Unit),
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Directory {
    pub district: District,
    orgs: BTreeMap<String, Organisation>,
    units: BTreeMap<String, Unit>,
}

impl Directory {
    /// Beidaihe District's directory, embedded in the binary.
    pub fn beidaihe() -> Self {
        Self::parse(BEIDAIHE_TOML, "embedded beidaihe-orgs.toml")
            .expect("the embedded directory is checked by a test")
    }

    pub fn from_file(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DirectoryError::Read(path.display().to_string(), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, source_name: &str) -> Result<Self, DirectoryError> {
        let file: DirectoryFile = toml::from_str(text).map_err(|e| DirectoryError::Parse {
            source_name: source_name.to_owned(),
            detail: e.to_string(),
        })?;

        let mut orgs = BTreeMap::new();
        for org in file.orgs {
            if orgs.contains_key(&org.id) {
                return Err(DirectoryError::Duplicate(org.id));
            }
            orgs.insert(org.id.clone(), org);
        }
        let mut units = BTreeMap::new();
        for unit in file.units {
            if orgs.contains_key(&unit.id) || units.contains_key(&unit.id) {
                return Err(DirectoryError::Duplicate(unit.id));
            }
            if !orgs.contains_key(&unit.parent) {
                return Err(DirectoryError::OrphanUnit {
                    unit: unit.id,
                    parent: unit.parent,
                });
            }
            units.insert(unit.id.clone(), unit);
        }

        let directory = Directory {
            district: file.district,
            orgs,
            units,
        };
        // D-2 and D-3 need someone to climb to.
        if directory.justice_bureau().is_none() {
            return Err(DirectoryError::MissingRole("justice_bureau (D-2)"));
        }
        if directory.district_government().is_none() {
            return Err(DirectoryError::MissingRole("district_government (D-3)"));
        }
        Ok(directory)
    }

    pub fn lookup(&self, id: &str) -> Lookup<'_> {
        if let Some(org) = self.orgs.get(id) {
            Lookup::Org(org)
        } else if let Some(unit) = self.units.get(id) {
            Lookup::Unit(unit)
        } else {
            Lookup::Unknown
        }
    }

    pub fn org(&self, id: &str) -> Option<&Organisation> {
        self.orgs.get(id)
    }

    pub fn unit(&self, id: &str) -> Option<&Unit> {
        self.units.get(id)
    }

    pub fn orgs(&self) -> impl Iterator<Item = &Organisation> {
        self.orgs.values()
    }

    pub fn kind_of(&self, id: &str) -> Option<OrgKind> {
        self.orgs.get(id).map(|o| o.kind)
    }

    pub fn justice_bureau(&self) -> Option<&Organisation> {
        self.orgs
            .values()
            .find(|o| o.kind == OrgKind::JusticeBureau)
    }

    pub fn district_government(&self) -> Option<&Organisation> {
        self.orgs
            .values()
            .find(|o| o.kind == OrgKind::DistrictGovernment)
    }

    /// "海滨镇人民政府 Haibin Town (130304100)", for messages people read.
    pub fn describe(&self, id: &str) -> String {
        match self.lookup(id) {
            Lookup::Org(o) => format!("{} {} ({})", o.name, o.name_en, o.id),
            Lookup::Unit(u) => format!("{} {} ({}, unit of {})", u.name, u.name_en, u.id, u.parent),
            Lookup::Unknown => format!("unknown organisation {id:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_beidaihe_directory_parses_with_units_and_roles() {
        let dir = Directory::beidaihe();
        assert_eq!(dir.district.code, "130304");
        assert_eq!(dir.kind_of("130304100"), Some(OrgKind::Township));
        assert_eq!(dir.kind_of("bdh-scjg"), Some(OrgKind::Department));
        assert_eq!(dir.justice_bureau().map(|o| o.id.as_str()), Some("bdh-sfj"));
        assert!(
            matches!(dir.lookup("130304100-zhzfd"), Lookup::Unit(u) if u.parent == "130304100")
        );
        assert_eq!(dir.lookup("nobody"), Lookup::Unknown);
    }

    #[test]
    fn directory_with_a_unit_of_an_unknown_parent_is_refused() {
        let text = r#"
            [district]
            code = "1"
            name = "x"
            name_en = "x"
            [[org]]
            id = "sfj"
            kind = "justice_bureau"
            name = "j"
            name_en = "j"
            [[unit]]
            id = "u"
            parent = "ghost"
            name = "u"
            name_en = "u"
        "#;
        let err = Directory::parse(text, "test").unwrap_err();
        assert!(matches!(err, DirectoryError::OrphanUnit { ref parent, .. } if parent == "ghost"));
    }

    #[test]
    fn malformed_directory_names_its_source() {
        let err = Directory::parse("[[org]\n", "bad.toml").unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }
}
