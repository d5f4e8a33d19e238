//! CLIENT TRACKING, CACHING, GETREDIR and TRACKINGINFO (Redis 7.0's options, replies and error
//! texts); the table and the invalidations are in [`crate::tracking`].

use std::sync::atomic::Ordering;

use bytes::Bytes;
use proto_resp::Reply;

use super::args::Keyword;
use super::{Args, Ctx};
use crate::error::RespError;
use crate::tracking::{overlapping, Target, TrackingOptions};

/// CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX prefix ...] [BCAST] [OPTIN] [OPTOUT] [NOLOOP]
pub fn tracking(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Reply, RespError> {
    let switch = args.next_bytes()?;
    let mut new = TrackingOptions::default();
    let mut prefixes: Vec<Bytes> = Vec::new();
    while let Some(word) = args.next_opt() {
        let more = args.remaining() > 0;
        match Keyword::new(&word).as_str() {
            "REDIRECT" if more => {
                if new.redirect != 0 {
                    return Err(RespError::Other(
                        "A client can only redirect to a single other client",
                    ));
                }
                let id = args.next_i64()?;
                if !ctx.shared.clients.list().iter().any(|c| c.id as i64 == id) {
                    return Err(RespError::Other(
                        "The client ID you want redirect to does not exist",
                    ));
                }
                new.redirect = id as u64;
            }
            "BCAST" => new.bcast = true,
            "OPTIN" => new.optin = true,
            "OPTOUT" => new.optout = true,
            "NOLOOP" => new.noloop = true,
            "PREFIX" if more => prefixes.push(args.next_bytes()?),
            _ => return Err(RespError::Syntax),
        }
    }
    match Keyword::new(&switch).as_str() {
        "ON" => {}
        "OFF" => {
            stop(ctx);
            return Ok(Reply::ok());
        }
        _ => return Err(RespError::Syntax),
    }
    if !new.bcast && !prefixes.is_empty() {
        return Err(RespError::Other(
            "PREFIX option requires BCAST mode to be enabled",
        ));
    }
    let old = ctx.client.tracking.clone();
    if old.as_ref().is_some_and(|o| o.bcast != new.bcast) {
        return Err(RespError::Other(
            "You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.",
        ));
    }
    if new.bcast && (new.optin || new.optout) {
        return Err(RespError::Other(
            "OPTIN and OPTOUT are not compatible with BCAST",
        ));
    }
    if new.optin && new.optout {
        return Err(RespError::Other(
            "You can't specify both OPTIN mode and OPTOUT mode",
        ));
    }
    if old
        .as_ref()
        .is_some_and(|o| (new.optin && o.optout) || (new.optout && o.optin))
    {
        return Err(RespError::Other(
            "You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.",
        ));
    }
    // Prefixes add to those already given; none may start another.
    let mut all = old.map(|o| o.prefixes).unwrap_or_default();
    if new.bcast {
        for (i, p) in prefixes.iter().enumerate() {
            if let Some(existing) = all.iter().find(|e| overlapping(e, p)) {
                return Err(RespError::Message(format!(
                    "Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(existing)
                )));
            }
            if let Some(other) = prefixes[i + 1..].iter().find(|o| overlapping(o, p)) {
                return Err(RespError::Message(format!(
                    "Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(other)
                )));
            }
        }
        all.extend(prefixes);
        if all.is_empty() {
            // As Redis: BCAST with no prefix is the empty prefix, every key.
            all.insert(Bytes::new());
        }
    }
    new.prefixes = all;
    let target = if new.redirect != 0 {
        Target::Redirect {
            to: new.redirect,
            from: ctx.client.info.clone(),
        }
    } else {
        Target::Own(ctx.client.queue().subscriber.clone())
    };
    ctx.client
        .info
        .tracking_redirect_broken
        .store(false, Ordering::Relaxed);
    let bcast = new
        .bcast
        .then(|| new.prefixes.iter().cloned().collect::<Vec<_>>());
    ctx.shared
        .keyspace
        .tracking
        .enable(ctx.client.info.id, target, bcast);
    // A batch applying now started before this client tracked, and tells nobody of its keys:
    // the reply waits for it, so the client's next read sees its changes.
    ctx.shared.keyspace.wait_for_apply();
    let info = &ctx.client.info;
    info.tracking.store(new.redirect as i64, Ordering::Relaxed);
    info.tracking_bcast.store(new.bcast, Ordering::Relaxed);
    ctx.client.tracking = Some(new);
    Ok(Reply::ok())
}

/// Turns the connection's tracking off (CLIENT TRACKING OFF, RESET, or it closes).
pub fn stop(ctx: &mut Ctx<'_>) {
    if ctx.client.tracking.take().is_some() {
        ctx.shared.keyspace.tracking.disable(ctx.client.info.id);
        ctx.client.info.tracking.store(-1, Ordering::Relaxed);
        ctx.client
            .info
            .tracking_bcast
            .store(false, Ordering::Relaxed);
    }
    ctx.client.caching = false;
}

/// CLIENT CACHING YES|NO
pub fn caching(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Reply, RespError> {
    let Some(options) = ctx.client.tracking.as_ref() else {
        return Err(RespError::Other(
            "CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
        ));
    };
    match Keyword::new(&args.next_bytes()?).as_str() {
        "YES" if options.optin => {}
        "YES" => {
            return Err(RespError::Other(
                "CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            ))
        }
        "NO" if options.optout => {}
        "NO" => {
            return Err(RespError::Other(
                "CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            ))
        }
        _ => return Err(RespError::Syntax),
    }
    ctx.client.caching = true;
    Ok(Reply::ok())
}

/// CLIENT GETREDIR: the REDIRECT id, 0 when tracking without one, -1 when not tracking.
pub fn getredir(ctx: &Ctx<'_>) -> Reply {
    Reply::Integer(
        ctx.client
            .tracking
            .as_ref()
            .map_or(-1, |t| t.redirect as i64),
    )
}

/// CLIENT TRACKINGINFO
pub fn trackinginfo(ctx: &Ctx<'_>) -> Reply {
    let bulk = |s: &'static str| Reply::Bulk(Bytes::from_static(s.as_bytes()));
    let t = ctx.client.tracking.as_ref();
    let mut flags = vec![bulk(if t.is_some() { "on" } else { "off" })];
    if let Some(t) = t {
        if t.bcast {
            flags.push(bulk("bcast"));
        }
        if t.optin {
            flags.push(bulk("optin"));
            if ctx.client.caching {
                flags.push(bulk("caching-yes"));
            }
        }
        if t.optout {
            flags.push(bulk("optout"));
            if ctx.client.caching {
                flags.push(bulk("caching-no"));
            }
        }
        if t.noloop {
            flags.push(bulk("noloop"));
        }
        if ctx
            .client
            .info
            .tracking_redirect_broken
            .load(Ordering::Relaxed)
        {
            flags.push(bulk("broken_redirect"));
        }
    }
    Reply::Map(vec![
        (bulk("flags"), Reply::Set(flags)),
        (
            bulk("redirect"),
            Reply::Integer(t.map_or(-1, |t| t.redirect as i64)),
        ),
        (
            bulk("prefixes"),
            Reply::Array(
                t.map(|t| t.prefixes.iter().cloned().map(Reply::Bulk).collect())
                    .unwrap_or_default(),
            ),
        ),
    ])
}

/// Whether a read by this connection now is remembered for invalidation (default mode:
/// always; OPTIN: after CLIENT CACHING YES; OPTOUT: unless after CLIENT CACHING NO).
pub fn remembers_reads(tracking: Option<&TrackingOptions>, caching: bool) -> bool {
    match tracking {
        None => false,
        Some(t) if t.bcast => false,
        Some(t) if t.optin => caching,
        Some(t) if t.optout => !caching,
        Some(_) => true,
    }
}
