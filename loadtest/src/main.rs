//! `loadtest`: the command-line entry point; the logic is in the library.

use anyhow::Context as _;
use clap::Parser as _;
use loadtest::cli::{Cli, Command};
use loadtest::{Report, nvcf};

fn print(report: &Report, json: bool) {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Nvcf(args)) => {
            let api = nvcf::Api::new(&args.gateway);
            let log = !args.run.quiet;
            let mut made = nvcf::Created::default();
            // Ctrl-C stops the set-up or the run; what was made is deleted all the same.
            let outcome = tokio::select! {
                r = async {
                    let setup = nvcf::setup(&api, &args, log, &mut made)
                        .await
                        .context("NVCF setup")?;
                    let (url, target, tpl) = nvcf::invocation(&args, &setup)?;
                    loadtest::run(args.run.plan(url, target, tpl))
                        .await
                        .context("load run")
                } => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            };
            if !made.is_empty() {
                let what = made.describe();
                if args.keep {
                    if log {
                        eprintln!("nvcf: kept {what}");
                    }
                } else {
                    // (A failed set-up deleted what it made itself and left `made` empty.)
                    let when = if outcome.is_some() {
                        ""
                    } else {
                        "interrupted; "
                    };
                    match nvcf::cleanup(&api, &made).await {
                        Ok(()) if log || outcome.is_none() => {
                            eprintln!("nvcf: {when}deleted {what}");
                        }
                        Ok(()) => {}
                        Err(e) => eprintln!("nvcf: {when}cleanup of {what} failed: {e}"),
                    }
                }
            }
            let Some(result) = outcome else {
                anyhow::bail!("interrupted");
            };
            print(&result?, args.run.json);
        }
        None => {
            let plan = loadtest::cli::plain_plan(&cli.plain)?;
            let report = loadtest::run(plan).await?;
            print(&report, cli.plain.run.json);
        }
    }
    Ok(())
}
