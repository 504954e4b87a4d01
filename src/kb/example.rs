//! The example knowledge base built into the binary (the files under `kb/`),
//! so `opsclaw chat` answers questions on a fresh machine from anywhere.

/// (path relative to the root, text). A test checks this lists every file under `kb/`.
pub const FILES: &[(&str, &str)] = &[
    ("en/certificate-expiry.md", include_str!("../../kb/en/certificate-expiry.md")),
    ("en/disk-full.md", include_str!("../../kb/en/disk-full.md")),
    ("en/etcd-no-leader.md", include_str!("../../kb/en/etcd-no-leader.md")),
    ("en/high-cpu.md", include_str!("../../kb/en/high-cpu.md")),
    ("en/high-error-rate.md", include_str!("../../kb/en/high-error-rate.md")),
    ("en/memory-oom.md", include_str!("../../kb/en/memory-oom.md")),
    ("en/node-not-ready.md", include_str!("../../kb/en/node-not-ready.md")),
    ("en/pod-crashloop.md", include_str!("../../kb/en/pod-crashloop.md")),
    ("zh/disk-full.md", include_str!("../../kb/zh/disk-full.md")),
    ("zh/etcd-no-leader.md", include_str!("../../kb/zh/etcd-no-leader.md")),
    ("zh/node-not-ready.md", include_str!("../../kb/zh/node-not-ready.md")),
    ("zh/pod-crashloop.md", include_str!("../../kb/zh/pod-crashloop.md")),
];

/// The root's name in hits and citations.
pub const NAME: &str = "example";

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_under_kb_is_built_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kb");
        let root = super::super::Root::dir(&dir);
        let on_disk: Vec<String> = root.scan().unwrap().into_iter().map(|(p, _)| p).collect();
        let built_in: Vec<&str> = super::FILES.iter().map(|(p, _)| *p).collect();
        assert_eq!(on_disk, built_in);
    }
}
