//! Times lookups in a large existing home: `locate_bench HOME ID|reindex...` (each id located once,
//! in order; delete `HOME/state.sqlite` first to time the paths without the index).

use std::time::Instant;

use baton_protocol::ThreadId;
use baton_store::FileStore;

fn main() {
    let mut args = std::env::args().skip(1);
    let home = std::path::PathBuf::from(args.next().expect("HOME argument"));
    let start = Instant::now();
    let store = FileStore::open(&home).expect("open");
    println!("open: {:.2} ms", start.elapsed().as_secs_f64() * 1e3);
    for id in args {
        if id == "reindex" {
            let start = Instant::now();
            let report = store.reindex().expect("reindex");
            println!(
                "reindex: {} found, {} unreadable in {:.0} ms",
                report.found,
                report.unreadable.len(),
                start.elapsed().as_secs_f64() * 1e3
            );
            continue;
        }
        let id = ThreadId::parse(&id).expect("thread id");
        let start = Instant::now();
        let result = store.locate(id);
        let elapsed = start.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(located) => println!("{id}: {:?} in {elapsed:.2} ms", located.via),
            Err(error) => println!("{id}: {error} after {elapsed:.2} ms"),
        }
    }
}
