//! Serves lookups from several threads: one `Cache` shared by a pool of
//! workers, each with its own reusable `Buffer`, answering the keys read
//! from standard input, one per line, as `KEY<TAB>tenant<TAB>field=value...`
//! (or `KEY<TAB>not found`, `KEY<TAB>query the database: REASON`, `KEY<TAB>bad
//! key: REASON`).
//!
//!     cargo run --example threads -- [--cache PATH] [--threads N] NAMESPACE < keys
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantcache::{Buffer, Cache, Lookup};

fn main() {
    let mut path = tenantcache::default_path().to_path_buf();
    let mut threads = 4usize;
    let mut namespace = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cache" => {
                path = args
                    .next()
                    .unwrap_or_else(|| usage("--cache needs a path"))
                    .into()
            }
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage("--threads needs a positive number"))
            }
            _ if namespace.is_none() && !arg.starts_with('-') => namespace = Some(arg),
            _ => usage(&format!("unexpected argument {arg:?}")),
        }
    }
    let namespace = namespace.unwrap_or_else(|| usage("no namespace given"));

    let cache = Cache::open(&path).unwrap_or_else(|e| fail(&e));
    let ns = cache.namespace(&namespace).unwrap_or_else(|e| fail(&e));

    // Keys go to whichever worker is free; answers come back in any order.
    let (keys, queue) = mpsc::channel::<String>();
    let queue = Arc::new(Mutex::new(queue));
    let (answers, output) = mpsc::channel::<String>();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (cache, ns, queue, answers) = (&cache, &ns, Arc::clone(&queue), answers.clone());
            s.spawn(move || {
                let mut buf = Buffer::new();
                loop {
                    let key = match queue.lock().unwrap().recv() {
                        Ok(key) => key,
                        Err(_) => return, // input finished
                    };
                    let line =
                        match cache.lookup_into(ns, &key, Duration::from_millis(200), &mut buf) {
                            Ok(Lookup::Found(entry)) => {
                                let mut line = format!("{key}\t{}", entry.tenant());
                                for (name, text) in entry.fields() {
                                    line += &format!("\t{name}={}", text.unwrap_or("NULL"));
                                }
                                line
                            }
                            Ok(Lookup::NotFound) => format!("{key}\tnot found"),
                            Ok(Lookup::Miss) => format!("{key}\tquery the database: not cached"),
                            Err(e) if e.needs_database() => {
                                format!("{key}\tquery the database: {e}")
                            }
                            Err(e) => format!("{key}\tbad key: {e}"),
                        };
                    if answers.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        drop(answers);
        s.spawn(move || {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for line in output {
                writeln!(out, "{line}").expect("write to stdout");
            }
        });
        for line in std::io::stdin().lock().lines() {
            let line = line.unwrap_or_else(|e| fail(&e));
            if !line.is_empty() {
                keys.send(line).expect("the workers are running");
            }
        }
        drop(keys);
    });
}

fn usage(problem: &str) -> ! {
    eprintln!("threads: {problem}\nusage: threads [--cache PATH] [--threads N] NAMESPACE < keys");
    std::process::exit(2);
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("threads: {e}");
    std::process::exit(1);
}
