//! Resolves users and groups against the container's /etc/passwd and /etc/group.
use std::path::Path;

fn read(rootfs: &Path, file: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(rootfs.join(file))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Primary gid of `uid` in the image's passwd (None if unknown).
pub fn primary_gid(rootfs: &Path, uid: u32) -> Option<u32> {
    read(rootfs, "etc/passwd")
        .into_iter()
        .find(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
        .and_then(|f| f.get(3)?.parse().ok())
}

/// Resolves `user[:group]` (names or numbers) to uid and gid.
pub fn resolve(rootfs: &Path, spec: &str) -> Option<(u32, u32)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read(rootfs, "etc/passwd");
    let (uid, pgid) = if let Ok(uid) = user.parse::<u32>() {
        (uid, primary_gid(rootfs, uid).unwrap_or(0))
    } else {
        let f = passwd
            .iter()
            .find(|f| f.first().map(String::as_str) == Some(user))?;
        (f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)
    };
    let gid = match group {
        None => pgid,
        Some(g) => match g.parse::<u32>() {
            Ok(g) => g,
            Err(_) => read(rootfs, "etc/group")
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))?
                .get(2)?
                .parse()
                .ok()?,
        },
    };
    Some((uid, gid))
}

/// Groups from /etc/group listing the user of `uid` as a member.
pub fn supplementary_gids(rootfs: &Path, uid: u32) -> Vec<u32> {
    let Some(name) = read(rootfs, "etc/passwd")
        .into_iter()
        .find(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
        .and_then(|f| f.first().cloned())
    else {
        return Vec::new();
    };
    read(rootfs, "etc/group")
        .into_iter()
        .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|x| x == name)))
        .filter_map(|f| f.get(2)?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nweb:x:34:\nextra:x:50:www\n",
        )
        .unwrap();
        assert_eq!(resolve(dir.path(), "www"), Some((33, 34)));
        assert_eq!(resolve(dir.path(), "33:web"), Some((33, 34)));
        assert_eq!(resolve(dir.path(), "1000"), Some((1000, 0)));
        assert_eq!(resolve(dir.path(), "nobody"), None);
        assert_eq!(supplementary_gids(dir.path(), 33), vec![50]);
    }
}
