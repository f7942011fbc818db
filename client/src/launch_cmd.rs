//! `shoal install | update | verify | repair | status`: settings from the
//! config file, environment and flags; a runtime; and the printed result.

use crate::cli::{DirArgs, InstallArgs, LauncherArgs, RepairArgs};
use crate::config::{self, Settings};
use crate::launcher::{self, Outcome, Request};
use crate::{Exit, human, with_exit};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Resolves settings: config file, then environment and flags (clap reads
/// both), checked once.
pub fn settings(args: &LauncherArgs) -> anyhow::Result<Settings> {
    let dir = config::config_dir();
    let mut file = config::File::load(&dir)?;
    let set = |slot: &mut Option<String>, v: &Option<String>| {
        if let Some(v) = v.clone().filter(|v| !v.is_empty()) {
            *slot = Some(v);
        }
    };
    set(&mut file.tracker, &args.tracker);
    set(&mut file.api_key, &args.api_key);
    set(&mut file.tracker_key, &args.tracker_key);
    set(&mut file.max_download, &args.max_download);
    set(&mut file.max_upload, &args.max_upload);
    if !args.listen.is_empty() {
        file.listen = Some(args.listen.clone());
    }
    let file = file.with_env(|k| match k {
        "SHOAL_INSTALL_ROOT" => std::env::var(k).ok(),
        _ => None,
    });
    let mut settings = file.resolve(&dir)?;
    settings.progress = !args.json;
    settings.metrics = args.metrics.clone();
    Ok(settings)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn seed_for(text: &str, no_seed: bool) -> anyhow::Result<std::time::Duration> {
    if no_seed {
        return Ok(std::time::Duration::ZERO);
    }
    human::parse_duration(text)
        .map_err(|e| with_exit(anyhow::anyhow!("--seed-for: {e}"), Exit::BadInput))
}

/// Runs `work`, or stops at Ctrl-C (or SIGTERM) with a note on how to
/// resume. Once every download in `seeding` is over (each flag set), a
/// signal instead sets `stop`, and the work ends gracefully (leaving the
/// swarms and printing the results).
fn interruptible<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
    seeding: &[Arc<AtomicBool>],
    stop: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<T> {
    runtime()?.block_on(async {
        let signals = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            loop {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => r?,
                    _ = term.recv() => {}
                }
                if seeding.iter().all(|s| s.load(Ordering::SeqCst)) {
                    let _ = stop.send(true);
                } else {
                    return Ok::<(), std::io::Error>(());
                }
            }
        };
        tokio::select! {
            r = work => r,
            _ = signals => {
                eprintln!("\ninterrupted: run the same command again to resume where it stopped");
                std::process::exit(130);
            }
        }
    })
}

fn install_dir(settings: &Settings, dir: &Option<PathBuf>, product: &str) -> PathBuf {
    dir.clone()
        .unwrap_or_else(|| settings.install_root.join(product))
}

pub(crate) fn install(args: &InstallArgs) -> anyhow::Result<()> {
    start(args, false, false)
}

pub(crate) fn update(args: &InstallArgs) -> anyhow::Result<()> {
    start(args, true, false)
}

pub(crate) fn preload(args: &InstallArgs) -> anyhow::Result<()> {
    start(args, false, true)
}

/// `install`, `update` and `preload` differ only in whether an install
/// must exist and whether the staged build is swapped in.
fn start(args: &InstallArgs, update: bool, preload: bool) -> anyhow::Result<()> {
    let settings = settings(&args.launcher)?;
    if args.dir.is_some() && args.products.len() > 1 {
        return Err(with_exit(
            anyhow::anyhow!(
                "--dir names one install: give one product, or leave --dir out to put each in {}/PRODUCT",
                settings.install_root.display()
            ),
            Exit::BadInput,
        ));
    }
    let seed_for = seed_for(&args.seed_for, args.no_seed)?;
    let reqs: Vec<Request> = args
        .products
        .iter()
        .map(|product| Request {
            product: product.clone(),
            channel: args.channel.clone(),
            dir: install_dir(&settings, &args.dir, product),
            seed_for,
            update,
            preload,
            until_unlock: args.until_unlock,
            seeding: Arc::default(),
        })
        .collect();
    run_install(&settings, &reqs, args.launcher.json)
}

/// Installs every request at once on one peer node; prints each outcome
/// as it ends, and fails (with the first failure's exit status) if any did.
fn run_install(settings: &Settings, reqs: &[Request], json: bool) -> anyhow::Result<()> {
    let seed_for = reqs
        .first()
        .map_or(std::time::Duration::ZERO, |r| r.seed_for);
    if !json && !seed_for.is_zero() {
        eprintln!(
            "after installing, shoal keeps serving other players for {} (--no-seed to skip, Ctrl-C to stop)",
            human::duration(seed_for)
        );
    }
    if !json && reqs.iter().any(|r| r.until_unlock) {
        eprintln!(
            "a locked encrypted release is preloaded, then served to other players until it unlocks (the tracker's clock), then {} (Ctrl-C stops; running again resumes)",
            if reqs.iter().all(|r| r.preload) {
                "this ends"
            } else {
                "opened at once"
            }
        );
    }
    let mut settings = settings.clone();
    // One redrawn line per download would overwrite each other.
    settings.progress &= reqs.len() == 1;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let launcher = launcher::Launcher::new();
    let work = async {
        let runs = reqs.iter().map(|req| {
            let mut stopped = stopped.clone();
            let (launcher, settings) = (&launcher, &settings);
            async move {
                let stop = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                let result = launcher::install_with(launcher, settings, req, None, stop).await;
                if result.is_err() {
                    // Nothing of it is left to interrupt: a signal may end
                    // the others' seeding gracefully.
                    req.seeding.store(true, Ordering::SeqCst);
                }
                match &result {
                    Ok(o) if !json => print_outcome(o),
                    Ok(_) => {}
                    Err(e) if reqs.len() > 1 => eprintln!("{}: {e:#}", req.product),
                    Err(_) => {}
                }
                result
            }
        });
        let results = futures::future::join_all(runs).await;
        if json {
            let done: Vec<&Outcome> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            // One product prints its outcome, or nothing when it failed (as
            // before several were allowed); several print the list.
            match done.as_slice() {
                [one] if reqs.len() == 1 => println!("{}", serde_json::to_string_pretty(one)?),
                _ if reqs.len() == 1 => {}
                all => println!("{}", serde_json::to_string_pretty(all)?),
            }
        }
        let failed = results.iter().filter(|r| r.is_err()).count();
        match results.into_iter().find_map(Result::err) {
            // The first failure's exit status stays (it is in the chain).
            Some(e) if reqs.len() > 1 => Err(e.context(format!(
                "{failed} of {} products failed; the first",
                reqs.len()
            ))),
            Some(e) => Err(e),
            None => Ok(()),
        }
    };
    let seeding: Vec<Arc<AtomicBool>> = reqs.iter().map(|r| r.seeding.clone()).collect();
    interruptible(work, &seeding, stop)
}

fn print_outcome(o: &Outcome) {
    if o.preloaded {
        let when = match o.unlocks_at {
            Some(t) => format!("it unlocks at {} (the tracker decides)", human::time(t)),
            None if o.encrypted => "its unlock is not scheduled yet".to_owned(),
            None => "it is not encrypted".to_owned(),
        };
        println!(
            "{} {} (v{}, {}) preloaded in {}: {} fetched in {}; {when}. Run `shoal install {}` then: it opens without downloading{}",
            o.product,
            o.label,
            o.version,
            o.channel,
            o.dir.display(),
            human::bytes(o.from_peers + o.from_seeds),
            human::duration(std::time::Duration::from_secs_f64(o.download_secs)),
            o.product,
            match o.previous_version {
                Some(v) => format!("; v{v} stays installed until then"),
                None => String::new(),
            }
        );
        return;
    }
    if o.up_to_date {
        println!(
            "{} {} (v{}, {}) is up to date in {}",
            o.product,
            o.label,
            o.version,
            o.channel,
            o.dir.display()
        );
        print_upcoming(o);
        return;
    }
    let fetched = o.from_peers + o.from_seeds;
    let share = if fetched > 0 {
        o.from_peers as f64 * 100.0 / fetched as f64
    } else {
        0.0
    };
    let verb = match o.previous_version {
        Some(v) => format!("updated from v{v} to"),
        None => "installed".into(),
    };
    println!(
        "{} {verb} {} (v{}, {}) in {}",
        o.product,
        o.label,
        o.version,
        o.channel,
        o.dir.join("current").display()
    );
    if let Some(secs) = o.unlock_secs {
        println!(
            "  unlocked: the preloaded build opened and swapped in in {}",
            human::duration(std::time::Duration::from_secs_f64(secs))
        );
    }
    println!(
        "  {} fetched in {} ({share:.0}% from peers), {} reused from the installed build, {} resumed",
        human::bytes(fetched),
        human::duration(std::time::Duration::from_secs_f64(o.download_secs)),
        human::bytes(o.reused_bytes),
        human::bytes(o.resumed_bytes),
    );
    if o.seeded_secs > 0.0 || o.uploaded > 0 {
        println!(
            "  {} uploaded to other players, seeded for {}",
            human::bytes(o.uploaded),
            human::duration(std::time::Duration::from_secs_f64(o.seeded_secs))
        );
    }
    print_upcoming(o);
}

/// A newer encrypted release is coming: when, and how to get it early.
fn print_upcoming(o: &Outcome) {
    let Some(u) = &o.upcoming else {
        return;
    };
    let unlocks = match u.unlocks_at {
        Some(t) => format!("unlocks at {}", human::time(t)),
        None => "is not scheduled to unlock yet".to_owned(),
    };
    let preload = match u.preload_opens_at {
        _ if u.preload_open => format!("`shoal preload {}` downloads it now", o.product),
        Some(t) => format!("its preload opens at {}", human::time(t)),
        None => "its preload is not open".to_owned(),
    };
    println!("  v{} is coming: it {unlocks}; {preload}", u.version);
}

pub(crate) fn verify(args: &DirArgs) -> anyhow::Result<()> {
    let mut settings = settings(&LauncherArgs::offline())?;
    settings.progress = !args.json;
    let v = runtime()?.block_on(launcher::verify(&settings, &args.dir))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if v.damage.is_empty() {
        println!(
            "{} v{}: all {} files ({}) match the manifest",
            v.product,
            v.version,
            v.files,
            human::bytes(v.bytes)
        );
    } else {
        for d in &v.damage {
            let what = match &d.problem {
                shoal_store::Problem::Missing => "missing".to_owned(),
                shoal_store::Problem::WrongSize { expected, actual } => {
                    format!("wrong size ({actual} bytes, expected {expected})")
                }
                shoal_store::Problem::BadChunks => {
                    format!(
                        "{} damaged",
                        human::plural(d.chunks.len() as u64, "chunk", "chunks")
                    )
                }
                shoal_store::Problem::WrongKind => "missing or of the wrong kind".to_owned(),
            };
            println!("{}: {what}", d.path);
        }
    }
    if v.damage.is_empty() {
        Ok(())
    } else {
        Err(with_exit(
            anyhow::anyhow!(
                "{} damaged; `shoal repair --dir {}` fetches only what is broken",
                human::plural(v.damage.len() as u64, "file is", "files are"),
                args.dir.display()
            ),
            Exit::Damaged,
        ))
    }
}

pub(crate) fn repair(args: &RepairArgs) -> anyhow::Result<()> {
    let settings = settings(&args.launcher)?;
    let r = interruptible(
        launcher::repair(&settings, &args.dir),
        &[Arc::default()],
        tokio::sync::watch::channel(false).0,
    )?;
    if args.launcher.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if r.damaged_files == 0 {
        println!("{} v{}: nothing to repair", r.product, r.version);
    } else {
        println!(
            "{} v{}: repaired {} by fetching {} ({})",
            r.product,
            r.version,
            human::plural(r.damaged_files as u64, "file", "files"),
            human::plural(u64::from(r.chunks_fetched), "chunk", "chunks"),
            human::bytes(r.bytes_fetched)
        );
    }
    Ok(())
}

pub(crate) fn status(args: &DirArgs) -> anyhow::Result<()> {
    let s = launcher::status(&args.dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    match &s.installed {
        Some(b) => println!(
            "{} {} (v{}, channel {}): {} in {} files at {}",
            b.product,
            b.label,
            b.version,
            b.channel,
            human::bytes(b.size),
            b.files,
            b.path.display()
        ),
        None => println!("nothing installed in {}", s.dir.display()),
    }
    if let Some(name) = &s.staging {
        println!(
            "download in progress or interrupted: {name} (run install or update again to resume)"
        );
    }
    match &s.seeding {
        Some(v) => println!("seeding: launcher pid {} until {}", v["pid"], v["until"]),
        None => println!("not seeding"),
    }
    Ok(())
}

impl LauncherArgs {
    /// No flags: the config file and environment only.
    fn offline() -> LauncherArgs {
        LauncherArgs {
            tracker: None,
            api_key: None,
            tracker_key: None,
            max_download: None,
            max_upload: None,
            listen: Vec::new(),
            metrics: None,
            json: false,
        }
    }
}
