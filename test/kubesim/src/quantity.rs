//! Storage quantities both ways: bytes of a Kubernetes quantity (`1Gi`, `500M`), and the
//! quantity apimachinery writes for a byte count (`resource.NewQuantity(n, BinarySI)`),
//! as the provisioner and the snapshot-controller write capacities and restore sizes.

/// Bytes of a Kubernetes quantity such as `1Gi`, `500M`, `1e9` or `1024` (fractions
/// rounded up); `None` for what is no size.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    const UNITS: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let q = q.trim();
    let (number, scale) = UNITS
        .iter()
        .find_map(|(unit, scale)| q.strip_suffix(unit).map(|n| (n, *scale)))
        .unwrap_or((q, 1.0));
    let n: f64 = number.parse().ok()?;
    let bytes = (n * scale).ceil();
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

/// The canonical text of `bytes` in the binary-SI format: the largest binary suffix that
/// divides it exactly (`1073741824` → `1Gi`, `1536` → `1536`); below 1024 apimachinery
/// switches to decimal SI (`1000` → `1k`, `512` → `512`).
pub fn bytes_quantity(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_owned();
    }
    let (base, suffixes): (u64, &[&str]) = if bytes < 1024 {
        (1000, &["", "k"])
    } else {
        (1024, &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
    };
    let mut n = bytes;
    let mut i = 0;
    while i + 1 < suffixes.len() && n.is_multiple_of(base) {
        n /= base;
        i += 1;
    }
    format!("{n}{}", suffixes[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1024"), Some(1024));
        assert_eq!(quantity_bytes("1.5Ki"), Some(1536));
        assert_eq!(quantity_bytes("1e9"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("1Ei"), Some(1 << 60));
        assert_eq!(quantity_bytes("lots"), None);
    }

    #[test]
    fn bytes_as_apimachinery_writes_them() {
        assert_eq!(bytes_quantity(1 << 30), "1Gi");
        assert_eq!(bytes_quantity(3 << 20), "3Mi");
        assert_eq!(bytes_quantity(2048), "2Ki");
        assert_eq!(bytes_quantity(1536), "1536");
        assert_eq!(bytes_quantity(500_000_000), "500000000");
        assert_eq!(bytes_quantity(1000), "1k");
        assert_eq!(bytes_quantity(512), "512");
        assert_eq!(bytes_quantity(0), "0");
        for q in ["1Gi", "5Gi", "100Mi"] {
            assert_eq!(bytes_quantity(quantity_bytes(q).unwrap()), q);
        }
    }
}
