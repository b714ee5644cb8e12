//! Byte-level builders of test files, shared by the integration tests.
#![allow(dead_code)]

/// A pickle (protocol 2) that imports `module.name` and returns it: what a state dict's first
/// global looks like, or an attack's.
pub fn torch_pickle(module: &str, name: &str) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'c'];
    p.extend(format!("{module}\n{name}\n").bytes());
    p.extend([b')', b'R', b'.']);
    p
}

/// A zip whose entries are stored (not compressed), as torch.save writes; CRCs are zero (no
/// reader here checks them).
pub fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cd = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        out.extend(b"PK\x03\x04");
        out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
        out.extend(0u32.to_le_bytes()); // crc
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(name.bytes());
        out.extend(*data);
        cd.extend(b"PK\x01\x02");
        cd.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // made by, needed, flags, method, time, date
        cd.extend(0u32.to_le_bytes());
        cd.extend((data.len() as u32).to_le_bytes());
        cd.extend((data.len() as u32).to_le_bytes());
        cd.extend((name.len() as u16).to_le_bytes());
        cd.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // extra, comment, disk, attrs
        cd.extend(offset.to_le_bytes());
        cd.extend(name.bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&cd);
    out.extend(b"PK\x05\x06");
    out.extend([0, 0, 0, 0]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((cd.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend([0, 0]);
    out
}

/// A GGUF file of `version` with general.alignment = `align` and one F32 tensor of `n` elements.
/// Version 1 writes counts, lengths and dimensions as u32, later versions as u64.
pub fn gguf_file(version: u32, align: u32, n: u64) -> Vec<u8> {
    let len = |f: &mut Vec<u8>, v: u64| {
        if version == 1 {
            f.extend((v as u32).to_le_bytes());
        } else {
            f.extend(v.to_le_bytes());
        }
    };
    let mut f = b"GGUF".to_vec();
    f.extend(version.to_le_bytes());
    len(&mut f, 1); // tensors
    len(&mut f, 2); // kv
    let s = |f: &mut Vec<u8>, s: &str| {
        len(f, s.len() as u64);
        f.extend(s.bytes());
    };
    s(&mut f, "general.architecture");
    f.extend(8u32.to_le_bytes());
    s(&mut f, "llama");
    s(&mut f, "general.alignment");
    f.extend(4u32.to_le_bytes());
    f.extend(align.to_le_bytes());
    s(&mut f, "w");
    f.extend(1u32.to_le_bytes());
    len(&mut f, n);
    f.extend(0u32.to_le_bytes()); // F32
    f.extend(0u64.to_le_bytes()); // offset
    let data_start = f.len().div_ceil(align as usize) * align as usize;
    f.resize(data_start + n as usize * 4, 0);
    f
}
