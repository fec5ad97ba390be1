//! Stage 3: verify the signature over the header bytes as transmitted and
//! the sender's certificate (trusted CA, validity, usage, CRL, bound to the
//! sender's agency id).

use super::decode::Refused;
use super::Context;
use mev_proto::envelope::Opened;

pub fn run(
    ctx: &Context,
    opened: &Opened,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), Box<Refused>> {
    opened
        .verify(&ctx.trust, ctx.verifier.as_ref(), now)
        .map(|_| ())
        .map_err(|r| Box::new(Refused::of(opened, r)))
}
