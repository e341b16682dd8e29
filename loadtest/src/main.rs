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
            let setup = nvcf::setup(&api, &args, !args.run.quiet)
                .await
                .context("NVCF setup")?;
            let run = async {
                let (url, target, tpl) = nvcf::invocation(&args, &setup)?;
                loadtest::run(args.run.plan(url, target, tpl)).await
            };
            let result = run.await;
            if args.cleanup {
                match nvcf::cleanup(&api, &setup).await {
                    Ok(()) if !args.run.quiet => eprintln!("nvcf: deleted {}", setup.function_id),
                    Ok(()) => {}
                    Err(e) => eprintln!("nvcf: cleanup failed: {e}"),
                }
            }
            print(&result.context("load run")?, args.run.json);
        }
        None => {
            let plan = loadtest::cli::plain_plan(&cli.plain)?;
            let report = loadtest::run(plan).await?;
            print(&report, cli.plain.run.json);
        }
    }
    Ok(())
}
