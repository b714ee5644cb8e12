//! The measuring half of bench/formats (which makes the files and compares with openssl):
//!   formats_bench header FILE REPS   the safetensors check of FILE, REPS times: min/median/max
//!   formats_bench sha256 FILE        one streamed SHA-256 of FILE: seconds and MB/s

use std::fs::File;
use std::time::Instant;

use linkfarm_formats::{check, hash, FileType, Limits};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: formats_bench header FILE REPS | sha256 FILE";
    let (Some(cmd), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    match cmd.as_str() {
        "header" => {
            let idle = status_kib("VmRSS");
            let reps: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(100);
            let mut times = Vec::with_capacity(reps);
            let mut tensors = 0;
            for _ in 0..reps {
                let t = Instant::now();
                // Opening is part of what an inbox worker does per file.
                let mut f = File::open(path).expect("open");
                let v = check(&mut f, FileType::Safetensors, &Limits::default()).expect("valid");
                times.push(t.elapsed().as_secs_f64() * 1e3);
                if let linkfarm_formats::Details::Safetensors(h) = v.details {
                    tensors = h.tensors.len();
                }
            }
            times.sort_by(f64::total_cmp);
            println!(
                "header check: {tensors} tensors, min {:.3} ms, median {:.3} ms, max {:.3} ms ({reps} runs); \
                 peak RSS {} KiB, {} KiB before the first check",
                times[0],
                times[reps / 2],
                times[reps - 1],
                status_kib("VmHWM"),
                idle
            );
        }
        "sha256" => {
            let mut f = File::open(path).expect("open");
            let t = Instant::now();
            let (d, n) = hash::sha256(&mut f).expect("read");
            let s = t.elapsed().as_secs_f64();
            println!("{} {n} {s:.6} {:.0}", d.hex(), n as f64 / s / 1e6);
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

/// A `/proc/self/status` figure in KiB (`VmRSS`, `VmHWM`), 0 when unreadable.
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}
