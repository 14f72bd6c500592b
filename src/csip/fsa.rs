//! FunctionSetAssignments function set: which DERProgramLists apply to this device.
//! A failing FSA list keeps the FSAs (and so the programs) last read.

use crate::sep2::FunctionSetAssignments;

use super::context::{Answer, Ctx, Paged, PollPart, next_page};
use super::discovery::FsaState;
use super::poller::PollKind;

/// FunctionSetAssignments state.
#[derive(Debug, Clone, Default)]
pub struct FsaSet {
    pub list_href: Option<String>,
    pub fsas: Vec<FsaState>,
}

impl FsaSet {
    /// Our EndDevice links the FSA list at `href` (or no longer does).
    pub fn link(&mut self, ctx: &mut Ctx, href: Option<String>) {
        let keep: Vec<String> = href.iter().cloned().collect();
        ctx.poller
            .retain_kind(PollKind::FunctionSetAssignmentsList, &keep);
        if let Some(href) = &href {
            ctx.poller.track(
                href,
                PollKind::FunctionSetAssignmentsList,
                None,
                ctx.now.mono_ms,
            );
        }
        self.list_href = href;
    }

    pub fn request(&self, ctx: &mut Ctx, href: &str) {
        ctx.poll(
            href,
            PollKind::FunctionSetAssignmentsList,
            PollPart::Fsas(Paged::new(href)),
        );
    }

    /// A page of the FSA list. Returns the DERProgramList hrefs of all FSAs once the
    /// whole list is read.
    pub fn handle(
        &mut self,
        ctx: &mut Ctx,
        href: &str,
        paged: Paged<FunctionSetAssignments>,
        answer: Answer,
    ) -> Option<Vec<String>> {
        let kind = PollKind::FunctionSetAssignmentsList;
        let paged = next_page(ctx, href, kind, paged, answer, PollPart::Fsas)?;
        ctx.poll_ok(href, kind, paged.poll_rate_s);
        let mut fsas = Vec::new();
        let mut program_lists = Vec::new();
        for fsa in paged.items {
            let fsa_href = fsa.href.clone().unwrap_or_default();
            if let Some(link) = &fsa.der_program_list_link {
                if !self.program_lists().contains(&link.href) {
                    log::info!(
                        "csip: FunctionSetAssignments {fsa_href}: programs at {}",
                        link.href
                    );
                }
                program_lists.push(link.href.clone());
            }
            fsas.push(FsaState {
                href: fsa_href,
                fsa,
            });
        }
        if self.fsas != fsas {
            ctx.tree_version += 1;
        }
        self.fsas = fsas;
        Some(program_lists)
    }

    /// The DERProgramList hrefs of all FSAs, in FSA order.
    pub fn program_lists(&self) -> Vec<String> {
        self.fsas
            .iter()
            .filter_map(|fsa| fsa.fsa.der_program_list_link.as_ref())
            .map(|link| link.href.clone())
            .collect()
    }

    /// The TariffProfileList hrefs of all FSAs, in FSA order (Pricing).
    pub fn tariff_profile_lists(&self) -> Vec<String> {
        self.fsas
            .iter()
            .filter_map(|fsa| fsa.fsa.tariff_profile_list_link.as_ref())
            .map(|link| link.href.clone())
            .collect()
    }
}
