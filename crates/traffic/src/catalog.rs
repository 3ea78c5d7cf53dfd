//! The fixed vocabulary of the generated traffic: APIs with their traffic share and latency
//! profile, regions and gateway hosts, SDKs, partners, and the seeded merchant table.

use std::collections::HashSet;

use fastrand::Rng;

/// One API route: how much traffic it gets, how it is called and how fast it answers.
#[derive(Debug)]
pub(crate) struct ApiProfile {
    /// Route template, the value of the `api` field.
    pub route: &'static str,
    pub method: &'static str,
    /// Relative share of all calls (the shares need not sum to anything in particular).
    pub share: f64,
    /// Median latency of a successful call, in milliseconds.
    pub median_ms: f64,
    /// Spread of the log-normal latency: sigma of `ln(latency)`.
    pub sigma: f64,
    /// Chance that a call lands in the slow tail (an issuer or bank taking its time).
    pub tail_chance: f64,
    /// Status of a successful call.
    pub success_status: u16,
    /// Whether the call can be declined (402), as calls that move money can.
    pub can_decline: bool,
    /// Concrete path: `path_head`, then `id_prefix` and a random id when `id_prefix` is not
    /// empty, then `path_tail`.
    pub path_head: &'static str,
    pub id_prefix: &'static str,
    pub path_tail: &'static str,
}

impl ApiProfile {
    /// Whether the route addresses one existing object, so a 404 is a common answer.
    pub fn addresses_object(&self) -> bool {
        !self.id_prefix.is_empty()
    }
}

const fn api(
    route: &'static str,
    method: &'static str,
    share: f64,
    (median_ms, sigma, tail_chance): (f64, f64, f64),
    success_status: u16,
    can_decline: bool,
    (path_head, id_prefix, path_tail): (&'static str, &'static str, &'static str),
) -> ApiProfile {
    ApiProfile {
        route,
        method,
        share,
        median_ms,
        sigma,
        tail_chance,
        success_status,
        can_decline,
        path_head,
        id_prefix,
        path_tail,
    }
}

/// A dozen APIs of a card-payments platform, one row each: route, method, traffic share,
/// latency (median ms, sigma, slow-tail chance), success status, can decline, path shape
/// (head, id prefix, tail).
#[rustfmt::skip]
pub(crate) const APIS: [ApiProfile; 12] = [
    api("/v1/payments",               "POST", 30.0, (180.0, 0.55, 0.020), 201, true,  ("/v1/payments", "", "")),
    api("/v1/payments/details",       "POST",  5.0, (240.0, 0.60, 0.020), 200, true,  ("/v1/payments/details", "", "")),
    api("/v1/payments/{id}",          "GET",  12.0, ( 35.0, 0.45, 0.004), 200, false, ("/v1/payments/", "pay_", "")),
    api("/v1/payments/{id}/captures", "POST", 10.0, (120.0, 0.50, 0.010), 201, true,  ("/v1/payments/", "pay_", "/captures")),
    api("/v1/payments/{id}/cancels",  "POST",  2.0, (110.0, 0.45, 0.008), 201, false, ("/v1/payments/", "pay_", "/cancels")),
    api("/v1/refunds",                "POST",  4.0, (150.0, 0.50, 0.010), 201, false, ("/v1/refunds", "", "")),
    api("/v1/tokens",                 "POST", 10.0, ( 25.0, 0.35, 0.002), 201, false, ("/v1/tokens", "", "")),
    api("/v1/paymentMethods",         "POST",  9.0, ( 60.0, 0.40, 0.004), 200, false, ("/v1/paymentMethods", "", "")),
    api("/v1/sessions",               "POST",  8.0, ( 90.0, 0.45, 0.006), 201, false, ("/v1/sessions", "", "")),
    api("/v1/balance",                "GET",   5.0, ( 45.0, 0.40, 0.004), 200, false, ("/v1/balance", "", "")),
    api("/v1/payouts",                "POST",  2.5, (600.0, 0.50, 0.030), 201, true,  ("/v1/payouts", "", "")),
    api("/v1/disputes/{id}",          "GET",   2.5, ( 80.0, 0.45, 0.006), 200, false, ("/v1/disputes/", "dp_", "")),
];

/// Cloud regions the gateways run in; a merchant is served from its home region.
pub(crate) const REGIONS: [&str; 6] = [
    "eu-west-1",
    "eu-central-1",
    "us-east-1",
    "us-west-2",
    "ap-southeast-1",
    "sa-east-1",
];

/// Gateway hosts per region: `HOSTS[region * HOSTS_PER_REGION + k]`.
pub(crate) const HOSTS_PER_REGION: usize = 3;
#[rustfmt::skip]
pub(crate) const HOSTS: [&str; REGIONS.len() * HOSTS_PER_REGION] = [
    "gw-euw1-a01", "gw-euw1-b02", "gw-euw1-c03",
    "gw-euc1-a01", "gw-euc1-b02", "gw-euc1-c03",
    "gw-use1-a01", "gw-use1-b02", "gw-use1-c03",
    "gw-usw2-a01", "gw-usw2-b02", "gw-usw2-c03",
    "gw-apse1-a01", "gw-apse1-b02", "gw-apse1-c03",
    "gw-sae1-a01", "gw-sae1-b02", "gw-sae1-c03",
];

/// Client libraries and versions; each merchant mostly uses one of them.
#[rustfmt::skip]
pub(crate) const SDKS: [&str; 14] = [
    "java/4.2.1", "java/3.9.0", "node/12.1.0", "node/11.4.2", "python/10.3.0", "php/9.0.0", "go/7.1.2",
    "dotnet/15.0.0", "ruby/8.2.0", "ios/5.4.1", "android/5.3.0", "web/6.0.3", "curl/8.5.0", "postman/10.20",
];

/// Platforms that operate merchant accounts on behalf of their sellers.
#[rustfmt::skip]
pub(crate) const PARTNERS: [&str; 20] = [
    "CartForge", "ShopWave", "Storefrontly", "BookNest", "TicketTide", "RideMesh", "SaasBill", "MarketHub", "FoodFleet", "StayPoint",
    "GameVault", "ClinicPay", "EduLedger", "FitTrack", "AutoDock", "EventLoop", "CrowdFund", "TravelGrid", "ParkLane", "MediaBox",
];

/// Merchant names are `{brand}{sector}{number}{channel}`, e.g. `NorthwindTravel042ECOM`.
#[rustfmt::skip]
const BRANDS: [&str; 40] = [
    "Acme", "Globex", "Initech", "Umbrella", "Northwind", "Contoso", "Stark", "Wayne", "Hooli", "Vandelay",
    "Soylent", "Tyrell", "Cyberdyne", "Wonka", "Oscorp", "Pied", "Aperture", "Gringotts", "Monarch", "Dunder",
    "Massive", "Virtucon", "Ollivander", "Krusty", "Bluth", "Sterling", "Prestige", "Zorg", "Nakatomi", "Gekko",
    "Duff", "Mooby", "Paddys", "Lacuna", "Rekall", "Weyland", "Yoyodyne", "Spacely", "Cogswell", "Ajax",
];

#[rustfmt::skip]
const SECTORS: [&str; 20] = [
    "Shop", "Travel", "Games", "Foods", "Mobility", "Retail", "Media", "Health", "Energy", "Books",
    "Fashion", "Tickets", "Hotels", "Telecom", "Sports", "Pets", "Home", "Music", "Cloud", "Auto",
];

/// Sales channel suffix, as merchant account names carry it (one account per channel).
const CHANNELS: [&str; 8] = ["ECOM", "POS", "MOTO", "APP", "SUBS", "MKTPL", "EU", "US"];

/// Share of merchants that belong to a partner.
const PARTNER_SHARE: f64 = 0.2;

/// Every merchant account and its stable attributes, index 0 the busiest.
#[derive(Debug)]
pub(crate) struct MerchantTable {
    pub names: Vec<String>,
    /// Index into [`PARTNERS`].
    pub partners: Vec<Option<u8>>,
    /// Index into [`REGIONS`].
    pub regions: Vec<u8>,
    /// Index into [`SDKS`]: the library the merchant integrated with.
    pub sdks: Vec<u8>,
}

impl MerchantTable {
    /// Builds `count` merchants with unique names such as `NorthwindTravel042ECOM`.
    pub fn generate(count: usize, rng: &mut Rng) -> MerchantTable {
        let combinations_per_number = BRANDS.len() * SECTORS.len() * CHANNELS.len();
        // Leave the name space at least four times larger than needed, so rejection of
        // duplicates stays cheap.
        let mut digits = 3usize;
        let mut numbers = 1_000usize;
        while combinations_per_number.saturating_mul(numbers) < count.saturating_mul(4) {
            digits += 1;
            numbers = numbers.saturating_mul(10);
        }

        let mut seen = HashSet::with_capacity(count);
        let mut table = MerchantTable {
            names: Vec::with_capacity(count),
            partners: Vec::with_capacity(count),
            regions: Vec::with_capacity(count),
            sdks: Vec::with_capacity(count),
        };
        while table.names.len() < count {
            let name = format!(
                "{}{}{:0digits$}{}",
                BRANDS[rng.usize(..BRANDS.len())],
                SECTORS[rng.usize(..SECTORS.len())],
                rng.usize(..numbers),
                CHANNELS[rng.usize(..CHANNELS.len())],
            );
            if !seen.insert(name.clone()) {
                continue;
            }
            table.names.push(name);
            // Squaring skews partners: a few platforms carry most partner merchants.
            let partner = (rng.f64() < PARTNER_SHARE)
                .then(|| (rng.f64().powi(2) * PARTNERS.len() as f64) as u8);
            table.partners.push(partner);
            table.regions.push(rng.u8(..REGIONS.len() as u8));
            table.sdks.push(rng.u8(..SDKS.len() as u8));
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_names_are_unique_and_attributes_in_range() {
        let mut rng = Rng::with_seed(1);
        let table = MerchantTable::generate(20_000, &mut rng);
        let unique: HashSet<&String> = table.names.iter().collect();
        assert_eq!(unique.len(), 20_000);
        assert!(
            table
                .partners
                .iter()
                .flatten()
                .all(|&p| usize::from(p) < PARTNERS.len())
        );
        assert!(
            table
                .regions
                .iter()
                .all(|&r| usize::from(r) < REGIONS.len())
        );
        let partnered = table.partners.iter().filter(|p| p.is_some()).count();
        assert!(
            (3_000..5_000).contains(&partnered),
            "{partnered} partner merchants"
        );
    }

    #[test]
    fn every_route_fits_its_path_shape() {
        for profile in &APIS {
            assert!(profile.route.starts_with(profile.path_head));
            assert_eq!(profile.addresses_object(), profile.route.contains("{id}"));
            assert!(profile.route.ends_with(profile.path_tail));
        }
    }
}
