//! IEEE 2030.5 and csipaus resource types, XML read/write, hexBinary, LFDI/SFDI, mRIDs.
