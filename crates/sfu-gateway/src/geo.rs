//! Where things are, roughly: a country hint becomes a point on the map, and the nearest SFU with
//! coordinates names the region to prefer.
//!
//! Two small built-in tables: ISO 3166-1 alpha-2 country codes → the coordinates of the country's main
//! population centre, and common region names (`eu-west`, `us-east`, ...) → a typical data-centre
//! location, used for a node that names such a region but gives no `lat`/`lon` itself. Precision
//! does not matter here: the answer only picks a region among a handful.

/// Latitude and longitude in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coordinates {
    pub lat: f64,
    pub lon: f64,
}

impl Coordinates {
    pub const fn new(lat: f64, lon: f64) -> Coordinates {
        Coordinates { lat, lon }
    }

    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(self, other: Coordinates) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (lat1, lat2) = (self.lat.to_radians(), other.lat.to_radians());
        let d_lat = lat2 - lat1;
        let d_lon = (other.lon - self.lon).to_radians();
        let a = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_lon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// The coordinates of a country's main population centre, by ISO code (case-insensitive).
pub fn country(code: &str) -> Option<Coordinates> {
    let code = code.trim();
    // GeoIP databases say GB; people say UK.
    let code = if code.eq_ignore_ascii_case("UK") { "GB" } else { code };
    COUNTRIES.iter().find(|(c, _)| c.eq_ignore_ascii_case(code)).map(|(_, at)| *at)
}

/// A typical location for a common region name (case-insensitive), for nodes without `lat`/`lon`.
pub fn region(name: &str) -> Option<Coordinates> {
    let name = name.trim();
    REGIONS.iter().find(|(r, _)| r.eq_ignore_ascii_case(name)).map(|(_, at)| *at)
}

const fn at(lat: f64, lon: f64) -> Coordinates {
    Coordinates::new(lat, lon)
}

const REGIONS: &[(&str, Coordinates)] = &[
    ("eu-west", at(48.9, 2.4)),           // Paris
    ("eu-central", at(50.1, 8.7)),        // Frankfurt
    ("eu-north", at(59.3, 18.1)),         // Stockholm
    ("eu-south", at(45.5, 9.2)),          // Milan
    ("uk-south", at(51.5, -0.1)),         // London
    ("us-east", at(38.9, -77.4)),         // Virginia
    ("us-central", at(41.6, -93.6)),      // Iowa
    ("us-west", at(45.6, -121.2)),        // Oregon
    ("ca-central", at(45.5, -73.6)),      // Montreal
    ("sa-east", at(-23.5, -46.6)),        // São Paulo
    ("sa-west", at(-33.4, -70.6)),        // Santiago
    ("me-south", at(25.2, 55.3)),         // Dubai
    ("me-central", at(25.2, 55.3)),       // Dubai
    ("af-south", at(-26.2, 28.0)),        // Johannesburg
    ("ap-south", at(19.1, 72.9)),         // Mumbai
    ("ap-east", at(22.3, 114.2)),         // Hong Kong
    ("ap-northeast", at(35.7, 139.7)),    // Tokyo
    ("ap-southeast", at(1.3, 103.8)),     // Singapore
    ("au-southeast", at(-33.9, 151.2)),   // Sydney
    ("ap-southeast-2", at(-33.9, 151.2)), // Sydney
];

const COUNTRIES: &[(&str, Coordinates)] = &[
    // Europe
    ("GB", at(51.5, -0.1)),
    ("IE", at(53.3, -6.3)),
    ("FR", at(48.9, 2.4)),
    ("BE", at(50.8, 4.4)),
    ("NL", at(52.4, 4.9)),
    ("LU", at(49.6, 6.1)),
    ("DE", at(51.2, 10.0)),
    ("CH", at(46.9, 7.4)),
    ("AT", at(48.2, 16.4)),
    ("ES", at(40.4, -3.7)),
    ("PT", at(38.7, -9.1)),
    ("IT", at(41.9, 12.5)),
    ("DK", at(55.7, 12.6)),
    ("SE", at(59.3, 18.1)),
    ("NO", at(59.9, 10.8)),
    ("FI", at(60.2, 24.9)),
    ("IS", at(64.1, -21.9)),
    ("EE", at(59.4, 24.7)),
    ("LV", at(56.9, 24.1)),
    ("LT", at(54.7, 25.3)),
    ("PL", at(52.2, 21.0)),
    ("CZ", at(50.1, 14.4)),
    ("SK", at(48.1, 17.1)),
    ("HU", at(47.5, 19.0)),
    ("SI", at(46.1, 14.5)),
    ("HR", at(45.8, 16.0)),
    ("RS", at(44.8, 20.5)),
    ("RO", at(44.4, 26.1)),
    ("BG", at(42.7, 23.3)),
    ("GR", at(38.0, 23.7)),
    ("UA", at(50.5, 30.5)),
    ("TR", at(41.0, 29.0)),
    ("RU", at(55.8, 37.6)),
    // Americas
    ("US", at(39.8, -98.6)),
    ("CA", at(45.4, -75.7)),
    ("MX", at(19.4, -99.1)),
    ("BR", at(-23.5, -46.6)),
    ("AR", at(-34.6, -58.4)),
    ("CL", at(-33.4, -70.6)),
    ("CO", at(4.7, -74.1)),
    ("PE", at(-12.0, -77.0)),
    ("VE", at(10.5, -66.9)),
    ("EC", at(-0.2, -78.5)),
    ("UY", at(-34.9, -56.2)),
    // Middle East and Africa
    ("IL", at(32.1, 34.8)),
    ("LB", at(33.9, 35.5)),
    ("JO", at(31.9, 35.9)),
    ("AE", at(25.2, 55.3)),
    ("SA", at(24.7, 46.7)),
    ("QA", at(25.3, 51.5)),
    ("EG", at(30.0, 31.2)),
    ("MA", at(33.6, -7.6)),
    ("DZ", at(36.8, 3.1)),
    ("TN", at(36.8, 10.2)),
    ("SN", at(14.7, -17.4)),
    ("CI", at(5.3, -4.0)),
    ("GH", at(5.6, -0.2)),
    ("NG", at(6.5, 3.4)),
    ("CM", at(3.9, 11.5)),
    ("KE", at(-1.3, 36.8)),
    ("ZA", at(-26.2, 28.0)),
    ("MU", at(-20.2, 57.5)),
    // Asia and Oceania
    ("KZ", at(43.2, 76.9)),
    ("IN", at(28.6, 77.2)),
    ("PK", at(24.9, 67.0)),
    ("BD", at(23.8, 90.4)),
    ("LK", at(6.9, 79.9)),
    ("CN", at(31.2, 121.5)),
    ("HK", at(22.3, 114.2)),
    ("TW", at(25.0, 121.5)),
    ("JP", at(35.7, 139.7)),
    ("KR", at(37.6, 127.0)),
    ("SG", at(1.3, 103.8)),
    ("MY", at(3.1, 101.7)),
    ("TH", at(13.8, 100.5)),
    ("VN", at(10.8, 106.7)),
    ("ID", at(-6.2, 106.8)),
    ("PH", at(14.6, 121.0)),
    ("AU", at(-33.9, 151.2)),
    ("NZ", at(-36.8, 174.8)),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables are data typed by hand: every code is unique, upper-case, two letters, and every
    /// coordinate is on the globe.
    #[test]
    fn tables_are_well_formed() {
        assert!(COUNTRIES.len() >= 60, "at least the ~60 most common countries");
        for (i, (code, c)) in COUNTRIES.iter().enumerate() {
            assert!(code.len() == 2 && code.chars().all(|ch| ch.is_ascii_uppercase()), "{code}");
            assert!(COUNTRIES[i + 1..].iter().all(|(other, _)| other != code), "{code} twice");
            assert!((-90.0..=90.0).contains(&c.lat) && (-180.0..=180.0).contains(&c.lon), "{code}");
        }
        for (i, (name, _)) in REGIONS.iter().enumerate() {
            assert!(REGIONS[i + 1..].iter().all(|(other, _)| other != name), "{name} twice");
        }
    }

    /// Each row: code as sent, expected coordinates (None = unknown).
    #[test]
    fn country_lookup_rules() {
        let rows: &[(&str, Option<Coordinates>)] = &[
            ("FR", Some(at(48.9, 2.4))),
            ("fr", Some(at(48.9, 2.4))), // GeoIP libraries differ in case
            (" BE ", Some(at(50.8, 4.4))),
            ("UK", Some(at(51.5, -0.1))), // common alias of GB
            ("XX", None),
            ("", None),
            ("FRA", None), // alpha-3 is not accepted
        ];
        for (code, expected) in rows {
            assert_eq!(country(code), *expected, "{code:?}");
        }
        assert_eq!(region("EU-West"), Some(at(48.9, 2.4)));
        assert_eq!(region("moon-1"), None);
    }

    #[test]
    fn distances_are_great_circle_kilometres() {
        let paris = at(48.9, 2.4);
        let rows = [(at(52.5, 13.4), 850.0..900.0), (at(1.3, 103.8), 10_600.0..10_800.0), (paris, 0.0..0.001)];
        for (other, range) in rows {
            let d = paris.distance_km(other);
            assert!(range.contains(&d), "{d} km to {other:?}");
        }
        // Antipodes do not produce NaN.
        assert!(at(0.0, 0.0).distance_km(at(0.0, 180.0)).is_finite());
    }
}
