//! `berthctl push IMAGE [TARGET]`: berthd uploads a local image to a registry, with the same
//! progress display as `pull`.

use berth_core::images::Image;
use berth_core::transfer::{Platform, PushRequest};
use clap::Args;

use super::pull::{Direction, ImageView, View, explain, stored_credentials};
use super::{Ctx, print};
use crate::output::{self, Format};
use crate::{CmdResult, Failure};

/// `berthctl push IMAGE [TARGET] [--platform P]... [--quiet]`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The local image.
    pub image: String,
    /// Where to push it (default: the image's own name).
    pub target: Option<String>,
    /// Push only this platform of an index, os/arch[/variant] (repeatable; default: all the
    /// content store holds).
    #[arg(long = "platform", value_parser = super::pull::platform)]
    pub platforms: Vec<Platform>,
    /// Show no progress; print only the image name.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// What a finished push prints on stdout: docker's `<name>: digest: <digest> size: <n>` line.
pub fn push_result(format: Format, quiet: bool, image: &Image) -> String {
    if quiet {
        return format!("{}\n", image.name);
    }
    output::render(format, &ImageView::new(image), |v| {
        format!(
            "{}: digest: {} size: {}\n",
            v.name, v.target.digest, v.target.size
        )
    })
}

/// Runs `berthctl push`.
pub async fn run(ctx: &Ctx, args: PushArgs) -> CmdResult {
    let PushArgs {
        image,
        target,
        platforms,
        quiet,
    } = args;
    let destination = target.as_deref().unwrap_or(&image);
    let req = PushRequest {
        credentials: stored_credentials(destination),
        reference: target.clone().unwrap_or_default(),
        image,
        platforms,
    };
    let client = ctx.connect().await?;
    let mut view = View::new(Direction::Push, quiet);
    let result = client.transfer().push(&req, |e| view.event(&e)).await;
    view.finish(result.is_ok());
    let pushed = result
        .map_err(|e| explain(e, &format!("push {}", req.image)))
        .map_err(Failure::from)?;
    print(&push_result(ctx.format, quiet, &pushed))
}

#[cfg(test)]
mod tests {
    use berth_core::Digest;
    use berth_core::diff::Descriptor;

    use super::*;

    #[test]
    fn results() {
        let img = Image::new(
            "reg.example/app:1",
            Descriptor::new(
                berth_core::images::MEDIA_TYPE_OCI_MANIFEST,
                Digest::of(b"m"),
                528,
            ),
        );
        assert_eq!(
            push_result(Format::Table, false, &img),
            format!(
                "reg.example/app:1: digest: {} size: 528\n",
                Digest::of(b"m")
            )
        );
        assert_eq!(
            push_result(Format::Table, true, &img),
            "reg.example/app:1\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&push_result(Format::Json, false, &img)).unwrap();
        assert_eq!(v["name"], "reg.example/app:1");
        assert_eq!(v["created"], serde_json::Value::Null);
    }
}
