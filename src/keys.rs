//! Key files: everything one node needs to authenticate itself to its peers and them to it.
//!
//! `fba_server keygen --out DIR NODE...` ([`generate`], [`write_key_files`]) draws one random
//! network id and one random 32-byte key per unordered pair of nodes, and writes one JSON
//! file per node, `DIR/<id>.key`, owner-only:
//!
//! ```json
//! {"format": "fba-key-file/1", "network": "<64 hex>", "id": 1, "address": "10.0.0.1:22000",
//!  "nodes": [{"id": 1, "address": "10.0.0.1:22000"},
//!            {"id": 2, "address": "10.0.0.2:22000", "key": "<64 hex: the key 1 shares with 2>"}]}
//! ```
//!
//! With `--operator CLIENT_ID` (repeatable) the files also carry `"operators": [...]`:
//! the client ids (from `fba_client keygen`) whose signed `reconfigure` requests the
//! cluster obeys (see [`crate::wallet::membership`]); every file of one network carries
//! the same list.
//!
//! The node's own entry carries no key; addresses are kept as the user wrote them (host
//! names allowed) and resolved when the node starts. [`KeyFile::load`] refuses, like ssh, a
//! file that group or others may read, and checks the whole file before anything uses it.
//! Secrets are never printed: not by `Debug`, not in errors.

use crate::auth::{NetworkKeys, KEY_LEN};
use crate::config::{derive_node_id, resolve_address, NodeSpec};
use crate::fsio::{sync_dir, IoFailure};
use crate::hash::{hex, unhex};
use crate::quorum::NodeId;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The `format` of the key files this version reads and writes.
pub const FORMAT: &str = "fba-key-file/1";

/// A secret (or the network id): 32 bytes that `Debug` does not show.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Secret([u8; KEY_LEN]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// One node named in a key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFileNode {
    /// Its id.
    pub id: NodeId,
    /// Its `HOST:PORT`, as written by the user.
    pub address: String,
    /// The key the file's owner shares with it (`None` for the owner itself).
    key: Option<Secret>,
}

/// A node's key file, checked: a known format, this node among the nodes exactly once
/// and without a key, every other node with a key, no id or address twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    network: Secret,
    /// The id of the node this file belongs to.
    pub id: NodeId,
    /// That node's `HOST:PORT`.
    pub address: String,
    /// Every node of the network, this one included.
    pub nodes: Vec<KeyFileNode>,
    /// The client ids allowed to change the cluster's membership.
    pub operators: Vec<u64>,
}

/// What is wrong inside a key file's text.
#[derive(Debug)]
pub enum KeyFileProblem {
    /// The `format` field is missing or names another version.
    Format(Option<String>),
    /// The JSON does not have the key file's shape.
    Shape(serde_json::Error),
    /// The network id is not 64 hex digits.
    BadNetwork,
    /// A node's key is not 64 hex digits.
    BadKey(NodeId),
    /// A node other than the file's owner has no key.
    MissingKey(NodeId),
    /// The file's owner has a key with itself.
    OwnKey(NodeId),
    /// An address is not `HOST:PORT`.
    BadAddress(String),
    /// The owner's id is not among the nodes.
    OwnerNotListed(NodeId),
    /// The owner's address differs from its entry among the nodes.
    OwnerAddress {
        /// The top-level `address`.
        address: String,
        /// The address of its entry in `nodes`.
        listed: String,
    },
    /// Two nodes with one id.
    DuplicateNode(NodeId),
    /// Two nodes with one address.
    DuplicateAddress(String),
    /// Fewer than two nodes.
    TooFewNodes(usize),
}

impl fmt::Display for KeyFileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileProblem::Format(Some(found)) => write!(f, "format is {found:?}, expected {FORMAT:?}"),
            KeyFileProblem::Format(None) => write!(f, "no \"format\" field (expected {FORMAT:?})"),
            KeyFileProblem::Shape(e) => write!(f, "not a key file: {e}"),
            KeyFileProblem::BadNetwork => write!(f, "the network id is not 64 hex digits"),
            KeyFileProblem::BadKey(n) => write!(f, "the key for node {n} is not 64 hex digits"),
            KeyFileProblem::MissingKey(n) => write!(f, "no key for node {n}"),
            KeyFileProblem::OwnKey(n) => write!(f, "node {n} is this file's own node and must carry no key"),
            KeyFileProblem::BadAddress(a) => write!(f, "address {a:?} is not HOST:PORT"),
            KeyFileProblem::OwnerNotListed(n) => write!(f, "this node (id {n}) is not among its nodes"),
            KeyFileProblem::OwnerAddress { address, listed } => {
                write!(f, "this node's address {address} differs from its entry {listed}")
            }
            KeyFileProblem::DuplicateNode(n) => write!(f, "node {n} is listed twice"),
            KeyFileProblem::DuplicateAddress(a) => write!(f, "address {a} is listed twice"),
            KeyFileProblem::TooFewNodes(n) => write!(f, "{n} nodes listed; a network needs at least 2"),
        }
    }
}

/// Why a key file cannot be used; each names the file.
#[derive(Debug)]
pub enum KeyFileError {
    /// The file could not be opened or read.
    Unreadable(PathBuf, io::Error),
    /// Group or others may read or write the file (its mode is given).
    Exposed(PathBuf, u32),
    /// The file is not JSON.
    Malformed(PathBuf, serde_json::Error),
    /// The file is JSON but not a valid key file.
    Invalid(PathBuf, KeyFileProblem),
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Unreadable(p, e) => write!(f, "cannot read key file {}: {e}", p.display()),
            KeyFileError::Exposed(p, mode) => write!(
                f,
                "key file {} is accessible to group or others (mode {:04o}); make it private with: chmod 600 {}",
                p.display(),
                mode & 0o7777,
                p.display()
            ),
            KeyFileError::Malformed(p, e) => write!(f, "key file {} is not valid JSON: {e}", p.display()),
            KeyFileError::Invalid(p, problem) => write!(f, "key file {}: {problem}", p.display()),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// The JSON shape of a key file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    format: String,
    network: String,
    id: NodeId,
    address: String,
    nodes: Vec<NodeJson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    operators: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeJson {
    id: NodeId,
    address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

fn secret_from_hex(text: &str) -> Option<Secret> {
    unhex(text)?.try_into().ok().map(Secret)
}

impl KeyFile {
    /// The file name of node `id`'s key file: `<id>.key`.
    pub fn file_name(id: NodeId) -> String {
        format!("{id}.key")
    }

    /// Reads and checks a key file, refusing one that group or others may read.
    pub fn load(path: &Path) -> Result<KeyFile, KeyFileError> {
        let unreadable = |e| KeyFileError::Unreadable(path.to_path_buf(), e);
        let mut file = File::open(path).map_err(unreadable)?;
        check_private(&file, path)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(unreadable)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| KeyFileError::Malformed(path.to_path_buf(), e))?;
        KeyFile::from_json(value).map_err(|problem| KeyFileError::Invalid(path.to_path_buf(), problem))
    }

    /// Checks a parsed key file: the format first (so a newer file is named as such).
    fn from_json(value: serde_json::Value) -> Result<KeyFile, KeyFileProblem> {
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            found => return Err(KeyFileProblem::Format(found.map(str::to_string))),
        }
        let json: FileJson = serde_json::from_value(value).map_err(KeyFileProblem::Shape)?;
        let network = secret_from_hex(&json.network).ok_or(KeyFileProblem::BadNetwork)?;
        let nodes =
            json.nodes.into_iter().map(|n| node_from_json(n, json.id)).collect::<Result<Vec<_>, _>>()?;
        let file = KeyFile { network, id: json.id, address: json.address, nodes, operators: json.operators };
        file.check()?;
        Ok(file)
    }

    /// The structural rules beyond each node's own fields.
    fn check(&self) -> Result<(), KeyFileProblem> {
        if self.nodes.len() < 2 {
            return Err(KeyFileProblem::TooFewNodes(self.nodes.len()));
        }
        let (mut ids, mut addresses) = (BTreeSet::new(), BTreeSet::new());
        for node in &self.nodes {
            if !ids.insert(node.id) {
                return Err(KeyFileProblem::DuplicateNode(node.id));
            }
            if !addresses.insert(node.address.to_ascii_lowercase()) {
                return Err(KeyFileProblem::DuplicateAddress(node.address.clone()));
            }
        }
        let me =
            self.nodes.iter().find(|n| n.id == self.id).ok_or(KeyFileProblem::OwnerNotListed(self.id))?;
        if me.address != self.address {
            return Err(KeyFileProblem::OwnerAddress {
                address: self.address.clone(),
                listed: me.address.clone(),
            });
        }
        Ok(())
    }

    /// The file's JSON text.
    pub fn to_json(&self) -> String {
        let json = FileJson {
            format: FORMAT.to_string(),
            network: hex(&self.network.0),
            id: self.id,
            address: self.address.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeJson { id: n.id, address: n.address.clone(), key: n.key.map(|k| hex(&k.0)) })
                .collect(),
            operators: self.operators.clone(),
        };
        let mut text = serde_json::to_string_pretty(&json).expect("a key file serializes");
        text.push('\n');
        text
    }

    /// The same file naming `operators` as the clients allowed to reconfigure.
    pub fn with_operators(mut self, operators: &[u64]) -> KeyFile {
        self.operators = operators.to_vec();
        self
    }

    /// Every node but the file's owner.
    pub fn peers(&self) -> impl Iterator<Item = &KeyFileNode> {
        self.nodes.iter().filter(move |n| n.id != self.id)
    }

    /// The keys the authentication layer needs.
    pub fn network_keys(&self) -> NetworkKeys {
        NetworkKeys {
            network: self.network.0,
            me: self.id,
            pairwise: self.nodes.iter().filter_map(|n| Some((n.id, n.key?.0))).collect(),
        }
    }
}

fn node_from_json(node: NodeJson, owner: NodeId) -> Result<KeyFileNode, KeyFileProblem> {
    if NodeSpec::parse(&node.address).is_none() || node.address.contains('@') {
        return Err(KeyFileProblem::BadAddress(node.address));
    }
    let key = match (node.key, node.id == owner) {
        (Some(_), true) => return Err(KeyFileProblem::OwnKey(node.id)),
        (None, true) => None,
        (None, false) => return Err(KeyFileProblem::MissingKey(node.id)),
        (Some(k), false) => Some(secret_from_hex(&k).ok_or(KeyFileProblem::BadKey(node.id))?),
    };
    Ok(KeyFileNode { id: node.id, address: node.address, key })
}

/// Refuses a file that group or others may read or write.
fn check_private(file: &File, path: &Path) -> Result<(), KeyFileError> {
    match crate::fsio::exposed_mode(file) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(KeyFileError::Exposed(path.to_path_buf(), mode)),
        Err(e) => Err(KeyFileError::Unreadable(path.to_path_buf(), e)),
    }
}

/// Why `keygen` wrote nothing (or, for [`KeygenError::Io`], stopped part way).
#[derive(Debug)]
pub enum KeygenError {
    /// Fewer than two nodes.
    TooFewNodes(usize),
    /// A node that is not `HOST:PORT` or `ID@HOST:PORT`.
    BadNode(String),
    /// A node's host could not be resolved (needed to derive its id).
    Unresolvable(String, io::Error),
    /// A node's address is unspecified (0.0.0.0 or ::), so no id derives from it.
    NeedId(String),
    /// Two nodes with one id.
    DuplicateNode(NodeId),
    /// Two nodes with one address.
    DuplicateAddress(String),
    /// A key file to be written exists already.
    Exists(PathBuf),
    /// The directory or a file could not be created or written.
    Io(IoFailure),
    /// The system's random generator failed.
    Random,
}

impl fmt::Display for KeygenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeygenError::TooFewNodes(n) => {
                write!(f, "{n} node{} given; a network needs at least 2", if *n == 1 { "" } else { "s" })
            }
            KeygenError::BadNode(s) => write!(f, "bad node {s:?}: expected HOST:PORT or ID@HOST:PORT"),
            KeygenError::Unresolvable(s, e) => write!(f, "cannot resolve node {s}: {e}"),
            KeygenError::NeedId(s) => {
                write!(f, "node {s} has no usable address to derive an id from; name it ID@HOST:PORT")
            }
            KeygenError::DuplicateNode(n) => write!(f, "node id {n} is given twice"),
            KeygenError::DuplicateAddress(a) => write!(f, "address {a} is given twice"),
            KeygenError::Exists(p) => {
                write!(f, "{} exists already; refusing to overwrite key files (nothing written)", p.display())
            }
            KeygenError::Io(e) => write!(f, "{e}"),
            KeygenError::Random => write!(f, "the system random generator failed"),
        }
    }
}

impl std::error::Error for KeygenError {}

/// A node for `keygen`: its id (given or derived) and its address as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeygenNode {
    /// Its id.
    pub id: NodeId,
    /// Its `HOST:PORT`.
    pub address: String,
}

impl KeygenNode {
    /// Reads `ID@HOST:PORT`, or `HOST:PORT` with the id derived from the resolved address
    /// ([`derive_node_id`]).
    pub fn parse(text: &str) -> Result<KeygenNode, KeygenError> {
        let spec = NodeSpec::parse(text).ok_or_else(|| KeygenError::BadNode(text.to_string()))?;
        let id = match spec.id {
            Some(id) => id,
            None => {
                let prefer_v4 = IpAddr::from([0, 0, 0, 0]);
                let addr = resolve_address(&spec.address, prefer_v4)
                    .map_err(|e| KeygenError::Unresolvable(text.to_string(), e))?;
                derive_node_id(addr).ok_or_else(|| KeygenError::NeedId(text.to_string()))?
            }
        };
        Ok(KeygenNode { id, address: spec.address })
    }
}

/// One key file per node: a random network id and a random key per unordered pair.
pub fn generate(nodes: &[KeygenNode]) -> Result<Vec<KeyFile>, KeygenError> {
    check_distinct(nodes)?;
    let random = SystemRandom::new();
    let fresh = || {
        let mut bytes = [0u8; KEY_LEN];
        random.fill(&mut bytes).map(|()| Secret(bytes)).map_err(|_| KeygenError::Random)
    };
    let network = fresh()?;
    let n = nodes.len();
    let mut pairs = std::collections::BTreeMap::new();
    for i in 0..n {
        for j in i + 1..n {
            pairs.insert((i, j), fresh()?);
        }
    }
    let key = |i: usize, j: usize| pairs.get(&(i.min(j), i.max(j))).copied();
    let file = |(i, me): (usize, &KeygenNode)| KeyFile {
        network,
        id: me.id,
        address: me.address.clone(),
        nodes: (nodes.iter().enumerate())
            .map(|(j, node)| KeyFileNode { id: node.id, address: node.address.clone(), key: key(i, j) })
            .collect(),
        operators: Vec::new(),
    };
    Ok(nodes.iter().enumerate().map(file).collect())
}

fn check_distinct(nodes: &[KeygenNode]) -> Result<(), KeygenError> {
    if nodes.len() < 2 {
        return Err(KeygenError::TooFewNodes(nodes.len()));
    }
    let (mut ids, mut addresses) = (BTreeSet::new(), BTreeSet::new());
    for node in nodes {
        if !ids.insert(node.id) {
            return Err(KeygenError::DuplicateNode(node.id));
        }
        if !addresses.insert(node.address.to_ascii_lowercase()) {
            return Err(KeygenError::DuplicateAddress(node.address.clone()));
        }
    }
    Ok(())
}

/// Writes each file as `dir/<id>.key` (mode 0600, synced), creating `dir` (mode 0700) if
/// needed. Refuses before writing anything if any of the files exists. Returns the paths.
pub fn write_key_files(dir: &Path, files: &[KeyFile]) -> Result<Vec<PathBuf>, KeygenError> {
    create_private_dir(dir)?;
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(KeyFile::file_name(f.id))).collect();
    if let Some(existing) = paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        return Err(KeygenError::Exists(existing.clone()));
    }
    for (file, path) in files.iter().zip(&paths) {
        write_private(path, file.to_json().as_bytes())?;
    }
    sync_dir(dir).map_err(|e| KeygenError::Io(IoFailure::of("sync", dir)(e)))?;
    Ok(paths)
}

fn create_private_dir(dir: &Path) -> Result<(), KeygenError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| KeygenError::Io(IoFailure::of("create directory", dir)(e)))
}

/// Creates `path` (never overwriting), owner-only, and writes and syncs `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeygenError> {
    crate::fsio::write_new_private(path, bytes).map_err(|e| match e {
        crate::fsio::PrivateWriteError::Exists => KeygenError::Exists(path.to_path_buf()),
        crate::fsio::PrivateWriteError::Io(failure) => KeygenError::Io(failure),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        crate::fsio::fresh_test_dir(&format!("keys-{tag}"))
    }

    fn nodes(specs: &[&str]) -> Vec<KeygenNode> {
        specs.iter().map(|s| KeygenNode::parse(s).expect("valid node")).collect()
    }

    #[test]
    fn generated_files_share_one_key_per_pair_and_round_trip() {
        let files =
            generate(&nodes(&["1@10.0.0.1:22000", "2@10.0.0.2:22000", "3@host-c:22000"])).expect("gen");
        assert_eq!(files.len(), 3);
        let keys: Vec<NetworkKeys> = files.iter().map(KeyFile::network_keys).collect();
        assert!(keys.iter().all(|k| k.network == keys[0].network));
        for (i, a) in keys.iter().enumerate() {
            assert_eq!(a.pairwise.len(), 2);
            assert!(!a.pairwise.contains_key(&a.me));
            for b in &keys[i + 1..] {
                assert_eq!(a.pairwise[&b.me], b.pairwise[&a.me], "a pair shares its key");
            }
        }
        assert_ne!(keys[0].pairwise[&NodeId(2)], keys[0].pairwise[&NodeId(3)], "pairs have their own keys");
        let value = serde_json::from_str(&files[2].to_json()).expect("json");
        assert_eq!(KeyFile::from_json(value).expect("valid"), files[2]);
        assert_eq!(files[2].address, "host-c:22000", "addresses are kept as written");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let files = generate(&nodes(&["1@10.0.0.1:1", "2@10.0.0.2:1"])).expect("gen");
        let text = files[0].to_json();
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        let key = value["nodes"][1]["key"].as_str().expect("a key").to_string();
        let network = value["network"].as_str().expect("network").to_string();
        let debug = format!("{:?} {:?}", files[0], files[0].network_keys());
        assert!(!debug.contains(&key[..16]) && !debug.contains(&network[..16]), "{debug}");
    }

    #[test]
    fn derived_ids_distinguish_hosts_on_one_port() {
        let ids: BTreeSet<NodeId> =
            nodes(&["10.0.0.1:22000", "10.0.0.2:22000", "10.0.0.3:22000", "10.0.0.4:22000"])
                .into_iter()
                .map(|n| n.id)
                .collect();
        assert_eq!(ids.len(), 4);
        assert_eq!(KeygenNode::parse("127.0.0.1:3001").expect("valid").id, NodeId(3001));
    }

    #[test]
    fn keygen_refuses_bad_node_lists() {
        assert!(matches!(generate(&nodes(&["1@a:1"])), Err(KeygenError::TooFewNodes(1))));
        assert!(matches!(generate(&nodes(&["1@a:1", "1@b:1"])), Err(KeygenError::DuplicateNode(NodeId(1)))));
        assert!(matches!(generate(&nodes(&["1@a:1", "2@A:1"])), Err(KeygenError::DuplicateAddress(_))));
        assert!(matches!(KeygenNode::parse("nowhere"), Err(KeygenError::BadNode(_))));
        assert!(matches!(KeygenNode::parse("x@a:1"), Err(KeygenError::BadNode(_))));
        assert!(matches!(KeygenNode::parse("0.0.0.0:1"), Err(KeygenError::NeedId(_))));
    }

    #[test]
    fn written_files_are_private_load_and_are_never_overwritten() {
        let dir = temp_dir("write").join("keys");
        let files = generate(&nodes(&["1@10.0.0.1:22000", "2@10.0.0.2:22000"])).expect("gen");
        let paths = write_key_files(&dir, &files).expect("written");
        assert_eq!(paths, [dir.join("1.key"), dir.join("2.key")]);
        for (path, file) in paths.iter().zip(&files) {
            assert_eq!(&KeyFile::load(path).expect("loads"), file);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&paths[0]), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        let before = fs::read(&paths[0]).expect("read");
        let again = generate(&nodes(&["1@10.0.0.1:22000", "3@10.0.0.3:22000"])).expect("gen");
        assert!(matches!(write_key_files(&dir, &again), Err(KeygenError::Exists(_))));
        assert_eq!(fs::read(&paths[0]).expect("read"), before);
        assert!(!dir.join("3.key").exists(), "nothing written when one file exists");
        fs::remove_dir_all(dir.parent().expect("parent")).ok();
    }

    #[cfg(unix)]
    #[test]
    fn exposed_and_invalid_files_are_refused_by_name() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("load");
        let files = generate(&nodes(&["1@10.0.0.1:22000", "2@10.0.0.2:22000"])).expect("gen");
        let paths = write_key_files(&dir, &files).expect("written");
        fs::set_permissions(&paths[0], fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = KeyFile::load(&paths[0]).expect_err("exposed");
        assert!(matches!(e, KeyFileError::Exposed(_, _)));
        assert!(e.to_string().contains("mode 0644") && e.to_string().contains("chmod 600"), "{e}");
        assert!(matches!(KeyFile::load(&dir.join("9.key")), Err(KeyFileError::Unreadable(..))));
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            write_private(&path, text.as_bytes()).expect("write");
            KeyFile::load(&path)
        };
        assert!(matches!(write("a.key", "{not json"), Err(KeyFileError::Malformed(..))));
        let good = files[1].to_json();
        let newer = good.replace(FORMAT, "fba-key-file/2");
        assert!(matches!(
            write("b.key", &newer),
            Err(KeyFileError::Invalid(_, KeyFileProblem::Format(Some(_))))
        ));
        let network = hex(&files[1].network.0);
        let bad_hex = good.replace(&network, &"zz".repeat(32));
        assert!(matches!(
            write("c.key", &bad_hex),
            Err(KeyFileError::Invalid(_, KeyFileProblem::BadNetwork))
        ));
        let mut value: serde_json::Value = serde_json::from_str(&good).expect("json");
        value["nodes"][0].as_object_mut().expect("object").remove("key");
        let missing = write("d.key", &value.to_string());
        assert!(matches!(missing, Err(KeyFileError::Invalid(_, KeyFileProblem::MissingKey(NodeId(1))))));
        fs::remove_dir_all(&dir).ok();
    }
}
